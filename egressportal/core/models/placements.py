"""Placements: which addresses on which node are an app's, as the platform reports them; and the
per-tenant quotas that keep one tenant from taking what others need."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Substr
from django.db.models.lookups import Exact

from .. import ipam, ipam6
from ..validators import validate_cidr
from .apps import App
from .hosts import Node
from .network import Region

__all__ = ["Placement", "TenantQuota"]


class Placement(models.Model):
    """One of an app's instance addresses (or a small CIDR) on one node, reported by the platform and
    replaced on every redeploy. Database guarantees (PostgreSQL; the service checks the same on
    SQLite): the CIDR lies inside one of the node's pod CIDRs, app and node are in the placement's
    region, within a region an address belongs to at most one app (an exclusion constraint on the CIDR
    as ``inet``, both families), and it is never wider than /24, or /120 for IPv6 (check constraints).
    An IPv4 placement's range is kept as integers, an IPv6 one's as sortable hex keys (ipam6.hex_key)."""

    # Denormalised from the node so that the exclusion constraint can be per region.
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="placements", editable=False)
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="placements")
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="placements")
    cidr = models.CharField(max_length=43, validators=[validate_cidr])
    first_int = models.BigIntegerField(null=True, editable=False)
    last_int = models.BigIntegerField(null=True, editable=False)
    first_hex = models.CharField(max_length=32, null=True, editable=False)
    last_hex = models.CharField(max_length=32, null=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["node_id", "first_int", "first_hex"]
        constraints = [
            models.UniqueConstraint(fields=["node", "cidr"], name="placement_unique_cidr_per_node"),
            models.CheckConstraint(condition=Q(first_int__lte=models.F("last_int")), name="placement_range_ordered"),
            models.CheckConstraint(
                condition=Q(last_int__lt=models.F("first_int") + 2 ** (32 - ipam.MIN_PLACEMENT_PREFIXLEN)),
                name="placement_at_most_slash24",
            ),
            # Exactly one family's bounds; an IPv6 one at most a /120: first and last share all but the
            # last two hex digits (8 bits).
            models.CheckConstraint(
                name="placement_bounds_one_family",
                condition=Q(first_int__isnull=False, last_int__isnull=False, first_hex__isnull=True, last_hex__isnull=True)
                | Q(first_int__isnull=True, last_int__isnull=True, first_hex__isnull=False, last_hex__isnull=False),
            ),
            models.CheckConstraint(
                name="placement6_at_most_slash120",
                condition=Q(first_hex__isnull=True)
                | Q(
                    Exact(Substr("first_hex", 1, 30), Substr("last_hex", 1, 30)),
                    first_hex__lte=models.F("last_hex"),
                ),
            ),
        ]
        indexes = [
            models.Index(fields=["region", "first_int"]),
            models.Index(fields=["region", "first_hex"]),
            models.Index(fields=["app", "node"]),
        ]

    def __str__(self) -> str:
        return f"{self.cidr} on {self.node_id}"

    def save(self, *args, **kwargs) -> None:
        net = ipam6.parse_network_any(self.cidr)
        self.cidr = str(net)
        self.set_bounds(net)
        super().save(*args, **kwargs)

    # Address order, IPv4 first, the same on every database (NULL bounds sort differently on each).
    ORDER = (models.F("first_int").asc(nulls_last=True), "first_hex")

    @property
    def sort_key(self) -> tuple[int, int]:
        return (4, self.first_int) if self.first_int is not None else (6, int(self.first_hex or "0", 16))

    def set_bounds(self, net: ipam.IPv4Network | ipam6.IPv6Network) -> None:
        if isinstance(net, ipam6.IPv6Network):
            self.first_int = self.last_int = None
            self.first_hex, self.last_hex = ipam6.network_keys(net)
        else:
            self.first_hex = self.last_hex = None
            self.first_int, self.last_int = ipam.network_bounds(net)


class TenantQuota(models.Model):
    """A staff override of the default quotas (EGRESS_QUOTA_APPS, EGRESS_QUOTA_ADDRESSES) for one user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="egress_quota")
    max_apps = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: the default (EGRESS_QUOTA_APPS).")
    max_addresses = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Dedicated addresses, those in quarantine after a release included. "
        "Empty: the default (EGRESS_QUOTA_ADDRESSES).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "tenant quota"

    def __str__(self) -> str:
        return f"quota of user {self.user_id}"
