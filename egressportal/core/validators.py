"""Field validators shared by models, forms, serializers and services."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from ..dataplane.hostkeys import parse_host_key
from . import ipam, ipam6

INTERFACE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
APP_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def validate_interface_name(value: str) -> None:
    if not isinstance(value, str) or not INTERFACE_NAME_RE.match(value) or value in {".", ".."}:
        raise ValidationError(
            "Interface names are 1-15 characters of letters, digits, '_', '.' and '-'.",
            code="invalid_interface",
        )


def validate_ssh_user(value: str) -> None:
    if not isinstance(value, str) or not SSH_USER_RE.match(value):
        raise ValidationError(
            "SSH user names start with a lowercase letter or '_' and contain only a-z, 0-9, '_' and '-'.",
            code="invalid_user",
        )


def validate_app_name(value: str) -> None:
    if not isinstance(value, str) or not APP_NAME_RE.match(value):
        raise ValidationError(
            "App names are 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit.",
            code="invalid_name",
        )


def validate_ipv4_cidr(value: str) -> None:
    try:
        ipam.parse_network(value)
    except ipam.IPAMError as exc:
        raise ValidationError(str(exc), code="invalid_cidr") from None


def validate_cidr(value: str) -> None:
    """An IPv4 or IPv6 network (pools and placements); the family's own limits are the services'."""
    try:
        ipam6.parse_network_any(value)
    except ipam.IPAMError as exc:
        raise ValidationError(str(exc), code="invalid_cidr") from None


def validate_ipv6_address(value: str) -> None:
    """An IPv6 host address as strict as the networks: no zone index, no IPv4-mapped, link-local,
    multicast, loopback or unspecified address."""
    try:
        ipam6.parse_address6(value)
    except ipam.IPAMError as exc:
        raise ValidationError(str(exc), code="invalid_address") from None


def validate_ssh_host_key(value: str) -> None:
    """An OpenSSH public key line as printed by ``ssh-keyscan`` or found in ``/etc/ssh/ssh_host_*_key.pub``."""
    try:
        parse_host_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_host_key") from None


def normalize_cidr_list(values: object, *, what: str = "source CIDR") -> list[str]:
    """Validate a list of CIDRs of either family (an IPv6 one at most a /MAX_POD_PREFIXLEN6); returns
    them normalised and sorted (IPv4 first), rejecting duplicates and overlaps within the list itself."""
    if isinstance(values, str):
        values = [v for v in re.split(r"[\s,]+", values) if v]
    if not isinstance(values, (list, tuple)):
        raise ValidationError(f"Give the {what}s as a list.", code="invalid")
    nets = []
    errors = []
    for raw in values:
        try:
            nets.append(ipam6.parse_network_any(raw, what=what, max_width6=ipam6.MAX_POD_PREFIXLEN6))
        except ipam.IPAMError as exc:
            errors.append(str(exc))
    if errors:
        raise ValidationError(errors, code="invalid_cidr")
    nets.sort(key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    for a, b in zip(nets, nets[1:], strict=False):
        if a.overlaps(b):
            raise ValidationError(f"{a} and {b} overlap.", code="overlap")
    return [str(n) for n in nets]
