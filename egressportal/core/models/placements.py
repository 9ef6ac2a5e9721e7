"""Placements: which addresses on which node are an app's, as the platform reports them; and the
per-tenant quotas that keep one tenant from taking what others need."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .. import ipam
from ..validators import validate_ipv4_cidr
from .apps import App
from .hosts import Node
from .network import Region

__all__ = ["Placement", "TenantQuota"]


class Placement(models.Model):
    """One of an app's instance addresses (or a small CIDR) on one node, reported by the platform and
    replaced on every redeploy. Database guarantees (PostgreSQL; the service checks the same on
    SQLite): the CIDR lies inside one of the node's pod CIDRs, app and node are in the placement's
    region, within a region an address belongs to at most one app (an exclusion constraint), and it is
    never wider than /24 (a check constraint)."""

    # Denormalised from the node so that the exclusion constraint can be per region.
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="placements", editable=False)
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="placements")
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="placements")
    cidr = models.CharField(max_length=18, validators=[validate_ipv4_cidr])
    first_int = models.BigIntegerField(editable=False)
    last_int = models.BigIntegerField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["node_id", "first_int"]
        constraints = [
            models.UniqueConstraint(fields=["node", "cidr"], name="placement_unique_cidr_per_node"),
            models.CheckConstraint(condition=Q(first_int__lte=models.F("last_int")), name="placement_range_ordered"),
            models.CheckConstraint(
                condition=Q(last_int__lt=models.F("first_int") + 2 ** (32 - ipam.MIN_PLACEMENT_PREFIXLEN)),
                name="placement_at_most_slash24",
            ),
        ]
        indexes = [models.Index(fields=["region", "first_int"]), models.Index(fields=["app", "node"])]

    def __str__(self) -> str:
        return f"{self.cidr} on {self.node_id}"

    def save(self, *args, **kwargs) -> None:
        net = ipam.parse_network(self.cidr)
        self.cidr = str(net)
        self.first_int, self.last_int = ipam.network_bounds(net)
        super().save(*args, **kwargs)


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
