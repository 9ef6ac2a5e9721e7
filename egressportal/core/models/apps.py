"""Apps and their egress desired state."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from ..rules import states
from ..validators import validate_app_name
from .hosts import Gateway, Node
from .network import Region

__all__ = ["App", "EgressType", "EgressStatus", "HostSync"]


class EgressType(models.TextChoices):
    SHARED = "shared", "Shared"
    DEDICATED = "dedicated", "Dedicated"


class EgressStatus(models.TextChoices):
    DISABLED = states.DISABLED, "Disabled"
    ASSIGNING = states.ASSIGNING, "Assigning"
    ASSIGNED = states.ASSIGNED, "Assigned"
    DEGRADED = states.DEGRADED, "Degraded"
    RELEASING = states.RELEASING, "Releasing"
    FAILED = states.FAILED, "Failed"


class App(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="apps")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="apps")
    name = models.CharField(max_length=63, validators=[validate_app_name])

    egress_type = models.CharField(max_length=10, choices=EgressType.choices, default=EgressType.SHARED)
    egress_status = models.CharField(max_length=10, choices=EgressStatus.choices, default=EgressStatus.DISABLED)
    egress_message = models.TextField(blank=True)
    egress_updated_at = models.DateTimeField(auto_now_add=True)
    # When the current desired state was asked for (toggle-to-live latency).
    egress_requested_at = models.DateTimeField(null=True, blank=True)
    # Bumped on every change of desired state; reconcilers compare against it.
    egress_generation = models.PositiveBigIntegerField(default=0)
    # Deletion waits until the app's addresses are off every host.
    delete_requested = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="app_unique_name_per_owner"),
            models.CheckConstraint(
                name="app_status_matches_type",
                condition=(
                    Q(egress_type="shared", egress_status__in=["disabled", "releasing", "failed"])
                    | Q(egress_type="dedicated", egress_status__in=["assigning", "assigned", "degraded", "failed"])
                ),
            ),
        ]
        indexes = [models.Index(fields=["owner", "name"]), models.Index(fields=["egress_status"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_dedicated(self) -> bool:
        return self.egress_type == EgressType.DEDICATED

    @property
    def is_pending(self) -> bool:
        return self.egress_status in (EgressStatus.ASSIGNING, EgressStatus.RELEASING)


class HostSync(models.Model):
    """Work a host owes an app: the host must be reconciled to the app's current
    desired state. The app is settled when none of its rows remain."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="host_syncs")
    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, null=True, blank=True, related_name="syncs")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, null=True, blank=True, related_name="syncs")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                name="hostsync_exactly_one_host",
                condition=Q(gateway__isnull=False, node__isnull=True) | Q(gateway__isnull=True, node__isnull=False),
            ),
            models.UniqueConstraint(fields=["app", "gateway"], name="hostsync_unique_gateway"),
            models.UniqueConstraint(fields=["app", "node"], name="hostsync_unique_node"),
        ]
