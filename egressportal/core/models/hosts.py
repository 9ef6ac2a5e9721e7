"""Hosts the workers configure over SSH: gateways (SNAT) and cluster nodes (steering)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from ..rules import states
from ..validators import validate_interface_name, validate_ipv6_address, validate_ssh_host_key, validate_ssh_user
from .network import Region

__all__ = ["HOST_MODELS", "ManagedHost", "Gateway", "Node", "HealthStatus", "host_model"]


class HealthStatus(models.TextChoices):
    UNKNOWN = states.UNKNOWN, "Unknown"
    HEALTHY = states.HEALTHY, "Healthy"
    UNHEALTHY = states.UNHEALTHY, "Unhealthy"


class ManagedHost(models.Model):
    name = models.SlugField(max_length=63, unique=True)
    region = models.ForeignKey(Region, on_delete=models.PROTECT)
    mgmt_address = models.GenericIPAddressField(
        protocol="IPv4", verbose_name="management address", help_text="Where the workers reach sshd."
    )
    ssh_port = models.PositiveIntegerField(default=22, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    ssh_user = models.CharField(max_length=32, default="root", validators=[validate_ssh_user])
    host_key = models.TextField(
        validators=[validate_ssh_host_key],
        help_text="Pinned SSH host public key, e.g. the content of /etc/ssh/ssh_host_ed25519_key.pub.",
    )
    use_sudo = models.BooleanField(default=False, help_text="Run ip/nft through 'sudo -n'.")
    # Optional per-host credential, Fernet ciphertext (egressportal.core.secrets); empty means the
    # workers' global key file. Never shown or returned: only whether it is set.
    ssh_private_key_encrypted = models.TextField(blank=True, editable=False)
    transit_address = models.GenericIPAddressField(
        protocol="IPv4", help_text="Address on the transit network between nodes and gateways."
    )
    transit_address6 = models.GenericIPAddressField(
        protocol="IPv6",
        null=True,
        blank=True,
        validators=[validate_ipv6_address],
        verbose_name="IPv6 transit address",
        help_text="The host's IPv6 address on the transit network; empty: the host carries no IPv6 egress.",
    )
    enabled = models.BooleanField(default=True, help_text="Disabled hosts are neither configured nor probed.")

    # Health, written by the workers.
    health = models.CharField(max_length=10, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN)
    health_message = models.TextField(blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_changed_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    health_failures = models.PositiveIntegerField(default=0)
    health_successes = models.PositiveIntegerField(default=0)
    # A host that presented a different key than the pinned one: a security event.
    host_key_mismatch_at = models.DateTimeField(null=True, blank=True)
    presented_host_key = models.TextField(blank=True)

    # Reconcile bookkeeping, written by the workers.
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    last_reconcile_duration = models.FloatField(null=True, blank=True)
    last_reconcile_error = models.TextField(blank=True)
    reconcile_failures = models.PositiveIntegerField(default=0)
    reconcile_count = models.PositiveIntegerField(default=0, help_text="Transactions applied to this host.")
    # Coalescing: at most one queued reconcile per host; a lease (with expiry,
    # so a killed worker cannot hold it forever) for at most one running.
    reconcile_queued_at = models.DateTimeField(null=True, blank=True)
    # After a failure: when the workers try this host again (shown to the apps waiting for it).
    reconcile_retry_at = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_ssh_private_key(self) -> bool:
        return bool(self.ssh_private_key_encrypted)

    # "gateway" or "node": the word in task arguments, event kinds and API paths (see host_model()).
    kind: str = ""


class Gateway(ManagedHost):
    kind = "gateway"
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="gateways")
    public_interface = models.CharField(max_length=15, validators=[validate_interface_name])
    slot = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(250)],
        help_text="Routing table and fwmark slot on the nodes (unique within the region).",
    )
    draining = models.BooleanField(default=False, help_text="No new addresses; active roles move away.")
    drain_rehome = models.BooleanField(
        default=True, help_text="While draining, also move the addresses off (each keeps its app)."
    )

    class Meta(ManagedHost.Meta):
        constraints = [
            models.UniqueConstraint(fields=["region", "slot"], name="gateway_unique_slot_per_region"),
            models.UniqueConstraint(fields=["mgmt_address", "ssh_port"], name="gateway_unique_mgmt_endpoint"),
            models.CheckConstraint(condition=Q(slot__gte=1, slot__lte=250), name="gateway_slot_range"),
        ]


class Node(ManagedHost):
    kind = "node"
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="nodes")
    pod_cidrs = models.JSONField(default=list, blank=True, help_text="The node's pod subnets, IPv4 and IPv6.")

    class Meta(ManagedHost.Meta):
        constraints = [
            models.UniqueConstraint(fields=["mgmt_address", "ssh_port"], name="node_unique_mgmt_endpoint"),
        ]


# The one kind -> model mapping ("gateway"/"node" travel in task arguments and sync rows).
HOST_MODELS: dict[str, type[Gateway] | type[Node]] = {model.kind: model for model in (Gateway, Node)}


def host_model(kind: str) -> type[Gateway] | type[Node]:
    """The model of a host kind; ValueError for anything else."""
    try:
        return HOST_MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown host kind {kind!r}") from None
