"""Validation of every value that can reach a host.

Everything rendered into an nft script or an ``ip`` command passes through here first, so a hostile
string (``eth0; rm -rf /``, ``$(reboot)``, a newline) fails loudly before any text is produced.
"""

from __future__ import annotations

import ipaddress
import re
from ipaddress import IPv4Address, IPv4Network

__all__ = [
    "DataplaneValueError",
    "interface_name",
    "int_in_range",
    "ipv4_address",
    "ipv4_network",
    "slot",
]

MAX_SLOT = 250

_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
# Only the characters an IPv4 address or CIDR can contain; keeps unicode digits and whitespace out even
# where ipaddress would be lenient.
_IPV4_TEXT_RE = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?")


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


def ipv4_address(value: object) -> IPv4Address:
    _reject_ipv6(value, "IPv4 address")
    if isinstance(value, IPv4Address):
        return value
    text = _text(value, "IPv4 address")
    if not _IPV4_TEXT_RE.fullmatch(text) or "/" in text:
        raise DataplaneValueError(f"invalid IPv4 address {text!r}")
    try:
        return IPv4Address(text)
    except ValueError as exc:
        raise DataplaneValueError(f"invalid IPv4 address {text!r}: {exc}") from None


def ipv4_network(value: object) -> IPv4Network:
    """A strict IPv4 network: ``198.18.20.1/24`` (host bits set) is an error, not silently ``198.18.20.0/24``."""
    _reject_ipv6(value, "IPv4 network")
    if isinstance(value, IPv4Network):
        return value
    if isinstance(value, IPv4Address):
        return IPv4Network(value)
    text = _text(value, "IPv4 network")
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
