"""Regions, IP pools and the egress addresses handed out from them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .. import ipam, ipam6
from ..validators import validate_cidr, validate_ipv6_address

__all__ = ["Region", "IPPool", "IPFamily", "EgressIP", "EgressIPStatus", "EgressIPRole"]


class Region(models.Model):
    slug = models.SlugField(max_length=50, unique=True, help_text="Short identifier used by the API, e.g. 'ams3'.")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class IPFamily(models.IntegerChoices):
    IPV4 = 4, "IPv4"
    IPV6 = 6, "IPv6"


class IPPool(models.Model):
    """A region's block of public addresses, IPv4 or IPv6 (the family follows from the CIDR). Pools never
    overlap (a PostgreSQL exclusion constraint on the CIDR as ``inet`` guards both families; services
    check too). An IPv4 pool's range is kept as integers, an IPv6 pool's as sortable hex keys
    (``ipam6.hex_key``): a 128-bit number fits no portable integer column."""

    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="pools")
    name = models.SlugField(max_length=63, unique=True)
    cidr = models.CharField(max_length=43, unique=True, validators=[validate_cidr])
    family = models.PositiveSmallIntegerField(choices=IPFamily.choices, default=IPFamily.IPV4, editable=False)
    excluded = models.JSONField(
        default=list, blank=True, help_text="Addresses inside the CIDR that are never handed out."
    )
    description = models.TextField(blank=True)
    first_int = models.BigIntegerField(null=True, editable=False)
    last_int = models.BigIntegerField(null=True, editable=False)
    first_hex = models.CharField(max_length=32, null=True, editable=False)
    last_hex = models.CharField(max_length=32, null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["region__slug", "family", "first_int", "first_hex"]
        verbose_name = "IP pool"
        constraints = [
            models.CheckConstraint(condition=Q(first_int__lte=models.F("last_int")), name="ippool_range_ordered"),
            models.CheckConstraint(
                name="ippool_bounds_match_family",
                condition=(
                    Q(family=4, first_int__isnull=False, last_int__isnull=False, first_hex__isnull=True, last_hex__isnull=True)
                    | Q(family=6, first_int__isnull=True, last_int__isnull=True, first_hex__isnull=False,
                        last_hex__isnull=False, first_hex__lte=models.F("last_hex"))
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cidr})"

    @property
    def is_ipv6(self) -> bool:
        return self.family == IPFamily.IPV6

    @property
    def network(self) -> ipam.IPv4Network | ipam6.IPv6Network:
        return ipam6.parse_network_any(self.cidr)

    @property
    def excluded_addresses(self) -> list[ipam.IPv4Address] | list[ipam6.IPv6Address]:
        if self.is_ipv6:
            return [ipam6.parse_address6(a) for a in self.excluded]
        return [ipam.parse_address(a) for a in self.excluded]

    @property
    def size(self) -> int:
        """Addresses this pool can hand out (usable range minus exclusions)."""
        net = self.network
        if isinstance(net, ipam6.IPv6Network):
            return ipam6.usable_count6(net, self.excluded_addresses)  # type: ignore[arg-type]
        return ipam.usable_count(net, self.excluded_addresses)  # type: ignore[arg-type]

    def save(self, *args, **kwargs) -> None:
        net = ipam6.parse_network_any(self.cidr)
        self.cidr = str(net)
        if isinstance(net, ipam6.IPv6Network):
            self.family = IPFamily.IPV6
            self.first_int = self.last_int = None
            self.first_hex, self.last_hex = ipam6.network_keys(net)
        else:
            self.family = IPFamily.IPV4
            self.first_hex = self.last_hex = None
            self.first_int, self.last_int = ipam.network_bounds(net)
        super().save(*args, **kwargs)


class EgressIPStatus(models.TextChoices):
    FREE = "free", "Free"
    ASSIGNED = "assigned", "Assigned"
    QUARANTINED = "quarantined", "Quarantined"


class EgressIPRole(models.TextChoices):
    ACTIVE = "active", "Active"
    STANDBY = "standby", "Standby"


class EgressIP(models.Model):
    """One address of an IPv4 pool, and with it, where the region has an IPv6 pool, its IPv6 partner.

    An app's IPv6 egress address is never a row of its own: it rides on one of the app's IPv4 rows
    (``address6``), so it has that row's gateway, role (active/standby), programmed flag, quarantine,
    drain and quota by construction: one IPv6 address per app per gateway beside the IPv4 one. It is
    taken lazily from the region's IPv6 pool (``services/egress6.py``) the first time the row is
    assigned there, and stays with the row (an app that gets its IPv4 address back gets its IPv6
    address back too).

    IPv4 rows are made free ahead of use, a chunk at a time (services.network.pool_rows_extend); an address
    beyond them has no row yet and counts as free."""

    pool = models.ForeignKey(IPPool, on_delete=models.PROTECT, related_name="addresses")
    address = models.GenericIPAddressField(protocol="IPv4", unique=True)
    address_int = models.BigIntegerField(editable=False)
    status = models.CharField(max_length=12, choices=EgressIPStatus.choices, default=EgressIPStatus.FREE)
    app = models.ForeignKey(
        "core.App", on_delete=models.PROTECT, null=True, blank=True, related_name="egress_ips"
    )
    gateway = models.ForeignKey(
        "core.Gateway", on_delete=models.PROTECT, null=True, blank=True, related_name="egress_ips"
    )
    role = models.CharField(max_length=8, choices=EgressIPRole.choices, blank=True)
    # Set by the gateway reconciler once the address and its SNAT mapping are live.
    programmed = models.BooleanField(default=False)
    assigned_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    last_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_app = models.ForeignKey(
        "core.App", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The IPv6 partner (see the class docstring); ``address6_hex`` is its sortable key (ipam6.hex_key).
    pool6 = models.ForeignKey(
        IPPool, on_delete=models.PROTECT, null=True, blank=True, related_name="addresses6", editable=False
    )
    address6 = models.GenericIPAddressField(
        protocol="IPv6", null=True, blank=True, unique=True, editable=False, validators=[validate_ipv6_address]
    )
    address6_hex = models.CharField(max_length=32, null=True, editable=False)
    # False while a partner given to an address already live (an IPv6 backfill, services/egress6.py) waits
    # for its gateway: until then the nodes do not steer the app's IPv6 there (make before break). Set again
    # by the gateway's reconcile once it holds the partner.
    programmed6 = models.BooleanField(default=True, editable=False)

    class Meta:
        ordering = ["address_int"]
        verbose_name = "egress IP"
        constraints = [
            models.CheckConstraint(
                name="egressip_assigned_has_app_and_gateway",
                condition=(
                    Q(status="assigned", app__isnull=False, gateway__isnull=False)
                    | (~Q(status="assigned") & Q(app__isnull=True, gateway__isnull=True, programmed=False))
                ),
            ),
            models.CheckConstraint(
                name="egressip_quarantine_has_release_time",
                condition=~Q(status="quarantined") | Q(released_at__isnull=False),
            ),
            # One address per gateway per app: two on one gateway gives no redundancy.
            models.UniqueConstraint(
                fields=["app", "gateway"], condition=Q(app__isnull=False), name="egressip_one_per_app_gateway"
            ),
            models.UniqueConstraint(
                fields=["app"], condition=Q(role="active"), name="egressip_one_active_per_app"
            ),
            models.CheckConstraint(
                name="egressip_address6_complete",
                condition=Q(pool6__isnull=True, address6__isnull=True, address6_hex__isnull=True)
                | Q(pool6__isnull=False, address6__isnull=False, address6_hex__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["pool", "status"]),
            models.Index(fields=["gateway", "status"]),
            models.Index(fields=["pool6", "address6_hex"]),
            # The allocator's claim: the lowest free row of a pool, without sorting every free row.
            models.Index(fields=["pool", "address_int"], condition=Q(status="free"), name="egressip_free_by_pool"),
        ]

    def __str__(self) -> str:
        return self.address

    def save(self, *args, **kwargs) -> None:
        self.address_int = int(ipam.parse_address(self.address))
        if self.address6:
            addr6 = ipam6.parse_address6(self.address6)
            self.address6, self.address6_hex = str(addr6), ipam6.hex_key(addr6)
        else:
            self.address6 = self.address6_hex = None
        super().save(*args, **kwargs)
