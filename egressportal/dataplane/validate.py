"""Validation of every value that can reach a host.

Everything rendered into an nft script or an ``ip`` command passes through here first, so a hostile
string (``eth0; rm -rf /``, ``$(reboot)``, a newline) fails loudly before any text is produced.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = [
    "DataplaneValueError",
    "interface_name",
    "int_in_range",
    "ip_address",
    "ip_network",
    "ipv4_address",
    "ipv4_network",
    "ipv6_address",
    "ipv6_network",
    "slot",
]

MAX_SLOT = 250
# Validated results by text (and IPv6 values by value): validation is a pure function of the value and the
# results are immutable, so each distinct text is checked once per process, not once per entry per
# reconcile (a 10,000-app gateway is 40,000 entries, mostly the same texts every time). Errors are
# never cached: a bad value raises every time.
_CACHE_SIZE = 1 << 17

_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# Only the characters an IPv4 address or CIDR can contain; keeps unicode digits and whitespace out even
# where ipaddress would be lenient.
_IPV4_TEXT_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?")
# Hex groups and colons only: no zone ("%eth0"), no embedded dotted quad, no whitespace.
_IPV6_TEXT_RE = re.compile(r"[0-9A-Fa-f:]{2,39}(/[0-9]{1,3})?")
# IPv6 networks broader than this are never a pod, app or transit network (IPv4 allows any prefix, but an
# IPv4 /16 is already a region; a /16 of IPv6 is 2**112 addresses).
IPV6_MIN_PREFIXLEN = 16
# Never a pod, app, transit or egress address: unspecified, loopback and IPv4-compatible (::/96),
# IPv4-mapped (SNAT/steer by a v4 address in disguise), link-local, site-local (deprecated), multicast.
IPV6_FORBIDDEN = (
    IPv6Network("::/96"),
    IPv6Network("::ffff:0:0/96"),
    IPv6Network("fe80::/10"),
    IPv6Network("fec0::/10"),
    IPv6Network("ff00::/8"),
)


class DataplaneValueError(ValueError):
    """A value is not safe or not valid to render into a host's configuration."""


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise DataplaneValueError(f"{what} must be a string, got {type(value).__name__}")
    return value


def interface_name(value: object) -> str:
    name = _text(value, "interface name")
    if not _IFNAME_RE.fullmatch(name) or name in {".", ".."}:
        raise DataplaneValueError(
            f"invalid interface name {name!r}: 1-15 characters of A-Z a-z 0-9 _ . -"
        )
    return name


def _reject_ipv6(value: object, what: str) -> None:
    if isinstance(value, (ipaddress.IPv6Address, ipaddress.IPv6Network)) or (
        isinstance(value, str) and ":" in value
    ):
        raise DataplaneValueError(f"invalid {what} {value!r}: IPv6 is not supported")


# The common cases first, by exact type (a str subclass, or anything else, takes the general path): an
# IPv4Address/IPv4Network is returned as it is and a plain text without ":" goes straight to its cached
# validation, as the general path does with them; a reconcile of 1,000 addresses validates ~6,000 values.


def ipv4_address(value: object) -> IPv4Address:
    cls = type(value)
    if cls is IPv4Address:
        return value  # type: ignore[return-value]
    if cls is str and ":" not in value:  # type: ignore[operator]
        return _ipv4_address_text(value)  # type: ignore[arg-type]
    _reject_ipv6(value, "IPv4 address")
    if isinstance(value, IPv4Address):
        return value
    return _ipv4_address_text(_text(value, "IPv4 address"))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv4_address_text(text: str) -> IPv4Address:
    if not _IPV4_TEXT_RE.fullmatch(text) or "/" in text:
        raise DataplaneValueError(f"invalid IPv4 address {text!r}")
    try:
        return IPv4Address(text)
    except ValueError as exc:
        raise DataplaneValueError(f"invalid IPv4 address {text!r}: {exc}") from None


def ipv4_network(value: object) -> IPv4Network:
    """A strict IPv4 network: ``198.18.20.1/24`` (host bits set) is an error, not silently ``198.18.20.0/24``."""
    cls = type(value)
    if cls is IPv4Network:
        return value  # type: ignore[return-value]
    if cls is str and ":" not in value:  # type: ignore[operator]
        return _ipv4_network_text(value)  # type: ignore[arg-type]
    _reject_ipv6(value, "IPv4 network")
    if isinstance(value, IPv4Network):
        return value
    if isinstance(value, IPv4Address):
        return IPv4Network(value)
    return _ipv4_network_text(_text(value, "IPv4 network"))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv4_network_text(text: str) -> IPv4Network:
    if not _IPV4_TEXT_RE.fullmatch(text):
        raise DataplaneValueError(f"invalid IPv4 network {text!r}")
    try:
        return IPv4Network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise DataplaneValueError(
                f"invalid IPv4 network {text!r}: host bits set (did you mean "
                f"{IPv4Network(text, strict=False)}?)"
            ) from None
        raise DataplaneValueError(f"invalid IPv4 network {text!r}: {exc}") from None


def _ipv6_text(value: object, what: str) -> str:
    text = _text(value, what)
    if not _IPV6_TEXT_RE.fullmatch(text) or ":" not in text:
        raise DataplaneValueError(f"invalid {what} {text!r}")
    return text


def _ipv6_usable(net: IPv6Network, shown: object, what: str) -> None:
    for bad in IPV6_FORBIDDEN:
        if net.overlaps(bad):
            raise DataplaneValueError(f"invalid {what} {shown!r}: inside reserved {bad}")


def ipv6_address(value: object) -> IPv6Address:
    """A global or unique-local IPv6 address (see IPV6_FORBIDDEN), written as hex groups only."""
    if isinstance(value, IPv6Address):
        return _ipv6_address_checked(value, value)
    if isinstance(value, IPv4Address):
        raise DataplaneValueError(f"invalid IPv6 address {value!r}: is IPv4")
    return _ipv6_address_text(_text(value, "IPv6 address"))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv6_address_text(text: str) -> IPv6Address:
    _ipv6_text(text, "IPv6 address")
    if "/" in text:
        raise DataplaneValueError(f"invalid IPv6 address {text!r}")
    try:
        address = IPv6Address(text)
    except ValueError as exc:
        raise DataplaneValueError(f"invalid IPv6 address {text!r}: {exc}") from None
    return _ipv6_address_checked(address, text)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv6_address_checked(address: IPv6Address, value: object) -> IPv6Address:
    if address.scope_id is not None:
        raise DataplaneValueError(f"invalid IPv6 address {value!r}: has a zone")
    _ipv6_usable(IPv6Network(address), str(address), "IPv6 address")
    return address


def ipv6_network(value: object) -> IPv6Network:
    """A strict IPv6 network of prefix length IPV6_MIN_PREFIXLEN..128 outside IPV6_FORBIDDEN."""
    if isinstance(value, IPv6Network):
        return _ipv6_network_checked(value)
    if isinstance(value, IPv6Address):
        return _ipv6_network_checked(IPv6Network(ipv6_address(value)))
    if isinstance(value, (IPv4Address, IPv4Network)):
        raise DataplaneValueError(f"invalid IPv6 network {value!r}: is IPv4")
    return _ipv6_network_text(_ipv6_text(value, "IPv6 network"))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv6_network_text(text: str) -> IPv6Network:
    try:
        net = IPv6Network(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            raise DataplaneValueError(
                f"invalid IPv6 network {text!r}: host bits set (did you mean "
                f"{IPv6Network(text, strict=False)}?)"
            ) from None
        raise DataplaneValueError(f"invalid IPv6 network {text!r}: {exc}") from None
    return _ipv6_network_checked(net)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _ipv6_network_checked(net: IPv6Network) -> IPv6Network:
    if net.prefixlen < IPV6_MIN_PREFIXLEN:
        raise DataplaneValueError(
            f"invalid IPv6 network {str(net)!r}: prefix shorter than /{IPV6_MIN_PREFIXLEN}"
        )
    _ipv6_usable(net, str(net), "IPv6 network")
    return net


def _is_ipv6(value: object) -> bool:
    return isinstance(value, (IPv6Address, IPv6Network)) or (isinstance(value, str) and ":" in value)


def ip_address(value: object) -> IPv4Address | IPv6Address:
    """Either family, each validated as strictly as ``ipv4_address``/``ipv6_address``."""
    cls = type(value)
    if cls is IPv4Address:
        return value  # type: ignore[return-value]
    if cls is str and ":" not in value:  # type: ignore[operator]
        return _ipv4_address_text(value)  # type: ignore[arg-type]
    return ipv6_address(value) if _is_ipv6(value) else ipv4_address(value)


def ip_network(value: object) -> IPv4Network | IPv6Network:
    cls = type(value)
    if cls is IPv4Network:
        return value  # type: ignore[return-value]
    if cls is str and ":" not in value:  # type: ignore[operator]
        return _ipv4_network_text(value)  # type: ignore[arg-type]
    return ipv6_network(value) if _is_ipv6(value) else ipv4_network(value)


def int_in_range(value: object, low: int, high: int, what: str) -> int:
    # bool is an int subclass; True as a table id is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataplaneValueError(f"{what} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise DataplaneValueError(f"{what} {value} out of range {low}..{high}")
    return value


def slot(value: object) -> int:
    """A gateway slot on a node: selects routing table ``TABLE_BASE + slot`` and fwmark ``slot << 16``."""
    return int_in_range(value, 1, MAX_SLOT, "gateway slot")
