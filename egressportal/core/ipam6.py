"""Pure IPv6 arithmetic for pools, pod CIDRs, placements and transit addresses (no database, no Django).

IPv6 sits beside the IPv4 rules of ``ipam.py`` and is as strict: networks are strict (no host bits),
text is plain hexadecimal, colons, dots and a prefix length (no zone index such as ``%eth0``, no spaces
or other characters), and the special ranges are refused: IPv4-mapped/compatible and the rest of ::/8
(write the IPv4 address itself), link-local, site-local and multicast.

The database cannot hold a 128-bit integer in a portable column, so IPv6 ranges and addresses are stored
as ``hex_key`` strings: 32 lowercase hex digits, zero-padded, which sort (and compare with ``<=``) like
the numbers they stand for on every backend.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from . import ipam
from .ipam import IPAMError

__all__ = [
    "MAX_POD_PREFIXLEN6",
    "MAX_POOL_PREFIXLEN6",
    "MIN_PLACEMENT_PREFIXLEN6",
    "from_hex_key",
    "hex_key",
    "is_ipv6_text",
    "network_keys",
    "next_free6",
    "next_free6_many",
    "parse_address6",
    "parse_address_any",
    "parse_network6",
    "parse_network_any",
    "parse_placement_any",
    "usable_count6",
    "usable_prefixes6",
    "usable_range6",
]

# A pool is at most a /64, the unit a provider routes to one subnet; anything wider is a typo. A /64
# holds 2**64 addresses, which is why IPv6 addresses are taken lazily and never listed row by row.
MAX_POOL_PREFIXLEN6 = 64
# A node's IPv6 pod range is usually a /64 to /80; wider than a /48 is a whole site, not one node.
MAX_POD_PREFIXLEN6 = 48
# A placement is an instance's address (/128) or at most a /120 (256 addresses, like IPv4's /24).
MIN_PLACEMENT_PREFIXLEN6 = 120
# Pools up to this many addresses may be scanned for a gap once their top is taken (a /112).
_SCAN_LIMIT = 2**16

# Only what an IPv6 address or CIDR can be made of; everything else (zone indexes, spaces inside, shell
# characters, non-ASCII digits) is refused before the parser sees it.
_TEXT_RE = re.compile(r"^[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3})?$")

_REFUSED: tuple[tuple[IPv6Network, str], ...] = (
    (IPv6Network("::ffff:0:0/96"), "an IPv4-mapped address; write the IPv4 address itself"),
    (IPv6Network("::/128"), "the unspecified address"),
    (IPv6Network("::1/128"), "the loopback address"),
    (IPv6Network("::/8"), "reserved (::/8: IPv4-compatible and special addresses)"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("fec0::/10"), "site-local (deprecated)"),
    (IPv6Network("ff00::/8"), "multicast"),
)


def is_ipv6_text(value: object) -> bool:
    """Whether a person's input is meant as IPv6 (IPv4 text never holds a colon)."""
    return isinstance(value, str) and ":" in value


def _refusal(net: IPv6Network) -> str | None:
    for special, why in _REFUSED:
        if net.overlaps(special):
            return f"includes {special} ({why})" if net.prefixlen < special.prefixlen else f"is {why}"
    return None


def _clean_text(value: object, *, what: str, example: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise IPAMError(f"Enter an {what} such as {example}.")
    text = value.strip()
    if "%" in text:
        raise IPAMError(f"'{text}' has a zone index (%...); an {what} never does.")
    if not _TEXT_RE.match(text):
        raise IPAMError(f"'{text}' is not a valid {what}.")
    return text


def parse_network6(value: object, *, what: str = "IPv6 CIDR", max_width: int = 0) -> IPv6Network:
    """A strict IPv6 network ("2001:db8:0:2::/64") outside the refused ranges, at most ``/max_width``
    wide (0: no limit)."""
    text = _clean_text(value, what=what, example="2001:db8:0:2::/64")
    if "/" not in text:
        parse_address6(text, what=what)
        raise IPAMError(f"'{text}' has no prefix length; write it as a {what} such as {text}/128.")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(text, strict=False)
            raise IPAMError(f"'{text}' has host bits set; did you mean {loose}?") from None
        raise IPAMError(f"'{text}' is not a valid {what}.") from None
    if not isinstance(net, IPv6Network):
        raise IPAMError(f"'{text}' is not a valid {what}.")
    why = _refusal(net)
    if why:
        raise IPAMError(f"{net} {why}; not usable here.")
    if max_width and net.prefixlen < max_width:
        raise IPAMError(f"{net} is too wide: an {what} is at most a /{max_width}.")
    return net


def parse_address6(value: object, *, what: str = "IPv6 address") -> IPv6Address:
    text = _clean_text(value, what=what, example="2001:db8:0:2::10")
    if "/" in text:
        raise IPAMError(f"'{text}' is not a valid {what} (no prefix length here).")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise IPAMError(f"'{text}' is not a valid {what}.") from None
    if not isinstance(addr, IPv6Address):
        raise IPAMError(f"'{text}' is not a valid {what}.")
    why = _refusal(IPv6Network(addr))
    if why:
        raise IPAMError(f"{addr} {why}; not usable here.")
    return addr


def parse_network_any(value: object, *, what: str = "CIDR", max_width6: int = 0) -> IPv4Network | IPv6Network:
    """An IPv4 network as ``ipam.parse_network`` takes it, or an IPv6 one as ``parse_network6`` does."""
    if is_ipv6_text(value):
        return parse_network6(value, what=f"IPv6 {what}", max_width=max_width6)
    return ipam.parse_network(value, what=what)


def parse_address_any(value: object, *, what: str = "address") -> IPv4Address | IPv6Address:
    if is_ipv6_text(value):
        return parse_address6(value, what=f"IPv6 {what}")
    return ipam.parse_address(value, what=f"IPv4 {what}")


def parse_placement_any(value: object) -> IPv4Network | IPv6Network:
    """``ipam.parse_placement`` for IPv4; for IPv6 an address (read as /128) or a CIDR of at most
    /MIN_PLACEMENT_PREFIXLEN6."""
    if not is_ipv6_text(value):
        return ipam.parse_placement(value)
    if isinstance(value, str) and "/" not in value:
        return IPv6Network(parse_address6(value, what="IPv6 placement address"))
    net = parse_network6(value, what="IPv6 placement address or CIDR")
    if net.prefixlen < MIN_PLACEMENT_PREFIXLEN6:
        raise IPAMError(
            f"{net} is too wide: a placement is an instance's address or a CIDR of at most "
            f"/{MIN_PLACEMENT_PREFIXLEN6} ({2 ** (128 - MIN_PLACEMENT_PREFIXLEN6)} addresses)."
        )
    return net


def hex_key(value: int | IPv6Address) -> str:
    """The sortable text form of an IPv6 address (32 lowercase hex digits)."""
    return f"{int(value):032x}"


def from_hex_key(key: str) -> IPv6Address:
    return IPv6Address(int(key, 16))


def network_keys(net: IPv6Network) -> tuple[str, str]:
    """First and last address of ``net`` as sortable keys (for range checks in the database)."""
    return hex_key(net.network_address), hex_key(net.broadcast_address)


def usable_range6(net: IPv6Network) -> tuple[int, int]:
    """The addresses a pool can hand out: all but the subnet-router anycast address (the network's
    first) on prefixes up to /126; all of a /127 or /128."""
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.prefixlen >= 127:
        return first, last
    return first + 1, last


def usable_count6(net: IPv6Network, excluded: Iterable[IPv6Address] = ()) -> int:
    first, last = usable_range6(net)
    skip = {int(a) for a in excluded if first <= int(a) <= last}
    return last - first + 1 - len(skip)


def usable_prefixes6(net: IPv6Network, excluded: Iterable[IPv6Address] = ()) -> list[IPv6Network]:
    """The fewest CIDRs covering exactly the addresses the pool can hand out (what a gateway holds of the
    pool as anyIP: never the subnet-router anycast address or an excluded one, which may be a router's).
    A /64 without exclusions is 64 prefixes; each excluded address adds at most 128."""
    first, last = usable_range6(net)
    return ipam.range_cover(first, last, excluded, IPv6Address)


def next_free6(
    net: IPv6Network, *, top: int | None, used: Iterable[int] | None = None, excluded: Iterable[IPv6Address] = ()
) -> IPv6Address | None:
    """The address to take next from a pool: the one after the highest ever taken (``top``), skipping
    excluded ones; once the top of the range is reached, the lowest never taken (``used``: every address
    ever taken, needed only then, so only small pools ever list them)."""
    found = next_free6_many(net, top=top, count=1, used=used, excluded=excluded)
    return found[0] if found else None


def next_free6_many(
    net: IPv6Network,
    *,
    top: int | None,
    count: int,
    used: Iterable[int] | None = None,
    excluded: Iterable[IPv6Address] = (),
) -> list[IPv6Address]:
    """The next ``count`` addresses to take from a pool (fewer when it runs out), in the order
    ``next_free6`` taking one at a time would give them: upwards from ``top``, then, with ``used`` given,
    the gaps below it lowest first (never in a pool wider than the scan limit)."""
    first, last = usable_range6(net)
    skip = {int(a) for a in excluded}
    out: list[int] = []
    candidate = first if top is None else max(first, top + 1)
    while len(out) < count and candidate <= last:
        if candidate not in skip:
            out.append(candidate)
        candidate += 1
    if len(out) < count and used is not None and last - first <= _SCAN_LIMIT:
        # Reached only once the top was taken, i.e. in a small pool (a /64 never gets there).
        taken = set(used) | skip | set(out)
        for value in range(first, last + 1):
            if len(out) >= count:
                break
            if value not in taken:
                out.append(value)
    return [IPv6Address(v) for v in out]
