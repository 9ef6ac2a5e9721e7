"""Pure IPv4 arithmetic for pools and source CIDRs (no database, no Django).

This module is the IPv4 half: its parsers take IPv4 only and refuse IPv6 text with a clear message.
IPv6 (pools, pod CIDRs, placements, transit addresses, the sortable keys IPv6 values are stored as)
lives in ``ipam6.py``, which builds on the rules here; ``ipam6.parse_network_any`` and
``parse_address_any`` take either family.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

__all__ = [
    "IPAMError",
    "parse_network",
    "parse_address",
    "network_bounds",
    "usable_range",
    "usable_count",
    "usable_prefixes",
    "iter_available",
    "overlapping",
    "parse_placement",
]

# Pools larger than this would make utilization and allocation scans costly and
# are almost certainly a typo (nobody owns a /8 of egress addresses).
MAX_POOL_PREFIXLEN = 16
# The widest placement the platform may report: a /24 (256 addresses) covers a node's whole pod range
# in common setups; anything wider is a mistake or an attempt to claim other apps' traffic.
MIN_PLACEMENT_PREFIXLEN = 24


class IPAMError(ValueError):
    """An address or network a person typed is not acceptable; the message says why."""


def parse_network(value: object, *, what: str = "CIDR") -> IPv4Network:
    """Parse a strict IPv4 network ("203.0.113.0/28"), with messages a person can act on."""
    if not isinstance(value, str) or not value.strip():
        raise IPAMError(f"Enter a {what} such as 203.0.113.0/28.")
    text = value.strip()
    if "/" not in text:
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise IPAMError(f"'{text}' is not a valid {what}.") from None
        raise IPAMError(f"'{text}' has no prefix length; write it as a {what} such as {text}/32.")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        msg = str(exc)
        if "has host bits set" in msg:
            loose = ipaddress.ip_network(text, strict=False)
            raise IPAMError(f"'{text}' has host bits set; did you mean {loose}?") from None
        raise IPAMError(f"'{text}' is not a valid {what}.") from None
    if net.version != 4:
        raise IPAMError(f"'{text}' is IPv6; only IPv4 is accepted here.")
    return net


def parse_address(value: object, *, what: str = "IPv4 address") -> IPv4Address:
    if not isinstance(value, str) or not value.strip():
        raise IPAMError(f"Enter an {what} such as 203.0.113.10.")
    text = value.strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise IPAMError(f"'{text}' is not a valid {what}.") from None
    if addr.version != 4:
        raise IPAMError(f"'{text}' is IPv6; only IPv4 is accepted here.")
    return addr


def network_bounds(net: IPv4Network) -> tuple[int, int]:
    """First and last address of a network as integers (for range constraints)."""
    return int(net.network_address), int(net.broadcast_address)


def usable_range(net: IPv4Network) -> tuple[int, int]:
    """The addresses a pool can hand out: all of /31 and /32, otherwise without
    the network and broadcast addresses (a pool may be an on-link subnet)."""
    first, last = network_bounds(net)
    if net.prefixlen >= 31:
        return first, last
    return first + 1, last - 1


def usable_count(net: IPv4Network, excluded: Iterable[IPv4Address] = ()) -> int:
    first, last = usable_range(net)
    skip = {int(a) for a in excluded if first <= int(a) <= last}
    return last - first + 1 - len(skip)


def usable_prefixes(net: IPv4Network, excluded: Iterable[IPv4Address] = ()) -> list[IPv4Network]:
    """The fewest CIDRs covering exactly the addresses the pool can hand out (what a gateway holds of the
    pool as anyIP: never its network/broadcast address or an excluded one, which may be a router's)."""
    first, last = usable_range(net)
    return range_cover(first, last, excluded, IPv4Address)


def range_cover(
    first: int, last: int, excluded: Iterable[IPv4Address | IPv6Address], address: type[IPv4Address] | type[IPv6Address]
) -> list[Any]:
    """The fewest CIDRs of ``address``'s family covering the integers first..last except ``excluded``
    (one family's addresses; IPv4 and IPv6 pools alike: ipam6.usable_prefixes6)."""
    skip = sorted({int(a) for a in excluded if first <= int(a) <= last})
    out: list[Any] = []
    low = first
    for value in [*skip, last + 1]:
        if low < value:
            out += ipaddress.summarize_address_range(address(low), address(value - 1))
        low = value + 1
    return out


def iter_available(
    net: IPv4Network, used: Iterable[int], excluded: Iterable[IPv4Address] = ()
) -> Iterator[IPv4Address]:
    """Free addresses of a pool in ascending order, given the integers in use."""
    first, last = usable_range(net)
    taken = set(used) | {int(a) for a in excluded}
    for value in range(first, last + 1):
        if value not in taken:
            yield IPv4Address(value)


def overlapping(candidate: IPv4Network, others: Iterable[IPv4Network]) -> list[IPv4Network]:
    """The networks among ``others`` that share at least one address with ``candidate``."""
    return [o for o in others if candidate.overlaps(o)]


def parse_placement(value: object) -> IPv4Network:
    """An address ("198.18.64.17", read as /32) or a small CIDR ("198.18.64.16/28") an app's instance
    uses; never wider than /MIN_PLACEMENT_PREFIXLEN (so never 0.0.0.0/0)."""
    if isinstance(value, str) and value.strip() and "/" not in value:
        return ipaddress.IPv4Network(f"{parse_address(value, what='placement address')}/32")
    net = parse_network(value, what="placement address or CIDR")
    if net.prefixlen < MIN_PLACEMENT_PREFIXLEN:
        raise IPAMError(
            f"{net} is too wide: a placement is an instance's address or a CIDR of at most "
            f"/{MIN_PLACEMENT_PREFIXLEN} ({2 ** (32 - MIN_PLACEMENT_PREFIXLEN)} addresses)."
        )
    return net
