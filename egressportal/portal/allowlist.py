"""Ready-to-paste allow-list snippets for an app's dedicated egress addresses."""

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
    """Every address, active and standby: the standby must already be allowed
    when traffic fails over to it. App names are DNS labels, safe in comments."""
    if not addresses:
        return []
    cidrs = [f"{a}/32" for a in addresses]
    comment = f"{app_name} dedicated egress"
    nft = (
        f"# {comment}\n"
        f"ip saddr {{ {', '.join(addresses)} }} tcp dport {port} accept"
    )
    iptables = "\n".join(
        f'iptables -A INPUT -s {c} -p tcp --dport {port} -m comment --comment "{comment}" -j ACCEPT' for c in cidrs
    )
    ranges = ",".join(f'{{CidrIp={c},Description="{comment}"}}' for c in cidrs)
    aws = (
        "aws ec2 authorize-security-group-ingress --group-id sg-0123456789abcdef0 \\\n"
        f"  --ip-permissions 'IpProtocol=tcp,FromPort={port},ToPort={port},IpRanges=[{ranges}]'"
    )
    return [
        Snippet("plain", "Addresses", "\n".join(addresses)),
        Snippet("cidr", "CIDR list", "\n".join(cidrs)),
        Snippet("nftables", "nftables rule", nft),
        Snippet("iptables", "iptables rules", iptables),
        Snippet("aws", "AWS security group (CLI)", aws),
    ]
