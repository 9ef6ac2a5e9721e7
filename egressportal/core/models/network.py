"""Regions, IP pools and the egress addresses handed out from them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .. import ipam
from ..validators import validate_ipv4_cidr

__all__ = ["Region", "IPPool", "EgressIP", "EgressIPStatus", "EgressIPRole"]


class Region(models.Model):
    slug = models.SlugField(max_length=50, unique=True, help_text="Short identifier used by the API, e.g. 'ams3'.")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class IPPool(models.Model):
    """A region's block of public addresses. Pools never overlap (a PostgreSQL
    exclusion constraint on [first_int, last_int] guards it; services check too)."""

    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="pools")
    name = models.SlugField(max_length=63, unique=True)
    cidr = models.CharField(max_length=18, unique=True, validators=[validate_ipv4_cidr])
    excluded = models.JSONField(
        default=list, blank=True, help_text="Addresses inside the CIDR that are never handed out."
    )
    description = models.TextField(blank=True)
    first_int = models.BigIntegerField(editable=False)
    last_int = models.BigIntegerField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["region__slug", "first_int"]
        verbose_name = "IP pool"
        constraints = [
            models.CheckConstraint(condition=Q(first_int__lte=models.F("last_int")), name="ippool_range_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.cidr})"

    @property
    def network(self) -> ipam.IPv4Network:
        return ipam.parse_network(self.cidr)

    @property
    def excluded_addresses(self) -> list[ipam.IPv4Address]:
        return [ipam.parse_address(a) for a in self.excluded]

    @property
    def size(self) -> int:
        """Addresses this pool can hand out (usable range minus exclusions)."""
        return ipam.usable_count(self.network, self.excluded_addresses)

    def save(self, *args, **kwargs) -> None:
        net = ipam.parse_network(self.cidr)
        self.cidr = str(net)
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
    """One address of a pool. Rows exist for every address ever handed out;
    addresses never handed out have no row and count as free."""

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
        ]
        indexes = [models.Index(fields=["pool", "status"]), models.Index(fields=["gateway", "status"])]

    def __str__(self) -> str:
        return self.address

    def save(self, *args, **kwargs) -> None:
        self.address_int = int(ipam.parse_address(self.address))
        super().save(*args, **kwargs)
