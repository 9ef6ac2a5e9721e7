"""Ready-to-paste allow-list snippets for an app's dedicated egress addresses, IPv4 and IPv6."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Snippet", "allowlist_snippets"]


@dataclass(frozen=True)
class Snippet:
    key: str
    title: str
    text: str


def allowlist_snippets(*, app_name: str, addresses: Sequence[str], port: int = 443) -> list[Snippet]:
    """Every address, active and standby, both families: the standby must already be allowed when traffic
    fails over to it, and a partner reaching over IPv6 sees the IPv6 one. App names are DNS labels, safe in
    comments; addresses come from the database, validated."""
    if not addresses:
        return []
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    cidrs = [f"{a}/32" for a in v4] + [f"{a}/128" for a in v6]
    comment = f"{app_name} dedicated egress"
    nft = [f"# {comment}"]
    if v4:
        nft.append(f"ip saddr {{ {', '.join(v4)} }} tcp dport {port} accept")
    if v6:
        nft.append(f"ip6 saddr {{ {', '.join(v6)} }} tcp dport {port} accept")
    iptables = [
        f'{"ip6tables" if ":" in c else "iptables"} -A INPUT -s {c} -p tcp --dport {port} '
        f'-m comment --comment "{comment}" -j ACCEPT'
        for c in cidrs
    ]
    permissions = [f"IpProtocol=tcp,FromPort={port},ToPort={port}"]
    if v4:
        permissions.append("IpRanges=[" + ",".join(f'{{CidrIp={a}/32,Description="{comment}"}}' for a in v4) + "]")
    if v6:
        permissions.append(
            "Ipv6Ranges=[" + ",".join(f'{{CidrIpv6={a}/128,Description="{comment}"}}' for a in v6) + "]"
        )
    aws = (
        "aws ec2 authorize-security-group-ingress --group-id sg-0123456789abcdef0 \\\n"
        f"  --ip-permissions '{','.join(permissions)}'"
    )
    return [
        Snippet("plain", "Addresses", "\n".join(addresses)),
        Snippet("cidr", "CIDR list", "\n".join(cidrs)),
        Snippet("nftables", "nftables rule" + ("s" if v4 and v6 else ""), "\n".join(nft)),
        Snippet("iptables", "iptables rules" if not v6 else "iptables and ip6tables rules", "\n".join(iptables)),
        Snippet("aws", "AWS security group (CLI)", aws),
    ]
