"""Gateways and nodes: registration, changes, host-key acceptance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from ...dataplane.hostkeys import fingerprint, parse_host_key
from .. import ipam6, secrets
from ..errors import ConflictError
from ..models import EgressIP, Gateway, Node, Placement, Region, host_model
from ..validators import normalize_cidr_list, validate_ipv6_address
from .drain import gateway_drain, gateway_undrain
from .events import event_record
from .reconcile import reconcile_request

__all__ = [
    "gateway_create",
    "node_create",
    "host_update",
    "host_delete",
    "host_accept_presented_key",
    "host_create",
    "host_credential_set",
    "host_editable_fields",
    "HOST_FIELDS",
    "KIND_FIELDS",
]

# The fields of a host, once: what creating one takes, what may change later, per kind. The admin and
# the API build their forms from these.
HOST_FIELDS = ("name", "region", "mgmt_address", "ssh_port", "ssh_user", "host_key", "use_sudo", "transit_address",
               "transit_address6", "enabled")
KIND_FIELDS = {Gateway.kind: ("public_interface", "slot", "draining"), Node.kind: ("pod_cidrs",)}
_IMMUTABLE = {"region", "name", "slot"}
_AUDITED_FIELDS = tuple(f for f in (*HOST_FIELDS, *KIND_FIELDS[Gateway.kind], *KIND_FIELDS[Node.kind]) if f != "name")


def host_editable_fields(kind: str) -> frozenset[str]:
    """What ``host_update`` accepts for a host of this kind."""
    return frozenset(f for f in (*HOST_FIELDS, *KIND_FIELDS[kind]) if f not in _IMMUTABLE)


def _snapshot(host: Gateway | Node) -> dict[str, Any]:
    """What the audit log keeps of a host (never its credential, only whether one is set)."""
    out: dict[str, Any] = {"name": host.name}
    for field in _AUDITED_FIELDS:
        if hasattr(host, field):
            value = getattr(host, field)
            out[field] = value.slug if isinstance(value, Region) else value
    out["own_ssh_key"] = host.has_ssh_private_key
    return out


def _normalize_host_key(value: str) -> str:
    return " ".join(value.split()[:2]) if isinstance(value, str) else value


def _transit6(value: object) -> str | None:
    """Checked as typed: the model field would quietly drop a zone index ("%eth0") before validating."""
    if value in (None, ""):
        return None
    try:
        validate_ipv6_address(value)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ValidationError({"transit_address6": exc.messages}) from None
    return str(value)


def _next_slot(region: Region) -> int:
    """The lowest free slot of ``region``. Call it inside the transaction that saves the gateway: the
    region's row stays locked until then, so concurrent registrations in one region take turns instead
    of picking the same slot (and one failing on the unique constraint). Other regions are not held up."""
    Region.objects.select_for_update().filter(pk=region.pk).values_list("pk", flat=True).first()
    used = set(Gateway.objects.filter(region=region).values_list("slot", flat=True))
    for slot in range(1, 251):
        if slot not in used:
            return slot
    raise ValidationError({"slot": f"Region {region.slug} already has 250 gateways."})


def gateway_create(
    *,
    region: Region,
    name: str,
    mgmt_address: str,
    host_key: str,
    transit_address: str,
    public_interface: str,
    transit_address6: str | None = None,
    ssh_port: int = 22,
    ssh_user: str = "root",
    use_sudo: bool = False,
    slot: int | None = None,
    actor: Any = None,
) -> Gateway:
    with transaction.atomic():
        gateway = Gateway(
            region=region,
            name=name,
            mgmt_address=mgmt_address,
            ssh_port=ssh_port,
            ssh_user=ssh_user,
            host_key=_normalize_host_key(host_key),
            use_sudo=use_sudo,
            transit_address=transit_address,
            transit_address6=_transit6(transit_address6),
            public_interface=public_interface,
            slot=slot or _next_slot(region),
        )
        gateway.full_clean()
        gateway.save()
        event_record(
            kind="gateway.created",
            message=f"Gateway {gateway.name} added to {region.slug} (slot {gateway.slot}).",
            actor=actor,
            gateway=gateway,
            data={"after": _snapshot(gateway)},
        )
        # Nodes need a route table towards the new gateway; the gateway itself
        # starts from a clean product table.
        reconcile_request(gateways=[gateway], nodes=Node.objects.filter(region=region, enabled=True))
    return gateway


def node_create(
    *,
    region: Region,
    name: str,
    mgmt_address: str,
    host_key: str,
    transit_address: str,
    transit_address6: str | None = None,
    pod_cidrs: Sequence[str] = (),
    ssh_port: int = 22,
    ssh_user: str = "root",
    use_sudo: bool = False,
    actor: Any = None,
) -> Node:
    with transaction.atomic():
        node = Node(
            region=region,
            name=name,
            mgmt_address=mgmt_address,
            ssh_port=ssh_port,
            ssh_user=ssh_user,
            host_key=_normalize_host_key(host_key),
            use_sudo=use_sudo,
            transit_address=transit_address,
            transit_address6=_transit6(transit_address6),
            pod_cidrs=normalize_cidr_list(list(pod_cidrs), what="pod CIDR"),
        )
        node.full_clean()
        node.save()
        event_record(
            kind="node.created",
            message=f"Node {node.name} added to {region.slug}.",
            actor=actor,
            node=node,
            data={"after": _snapshot(node)},
        )
        # Gateways route replies back to the new node's pods.
        reconcile_request(nodes=[node], gateways=Gateway.objects.filter(region=region, enabled=True))
    return node


def host_create(
    *,
    kind: str,
    enabled: bool = True,
    draining: bool = False,
    ssh_private_key: str = "",
    actor: Any = None,
    **fields: Any,
) -> Gateway | Node:
    """Add a gateway or a node the way the admin and the API both do: the host, then its own SSH key, then
    a drain or a disabled start, in one transaction. ``fields`` are HOST_FIELDS and the kind's KIND_FIELDS."""
    allowed = {f for f in (*HOST_FIELDS, *KIND_FIELDS[host_model(kind).kind]) if f not in {"enabled", "draining"}}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({f: "Not a field of this kind of host." for f in sorted(unknown)})
    if draining and kind != Gateway.kind:
        raise ValidationError({"draining": "Only gateways are drained."})
    if ssh_private_key:
        try:
            secrets.private_key_check(ssh_private_key)  # refuse before anything is written
        except (ValueError, secrets.SecretsError) as exc:
            raise ValidationError({"ssh_private_key": str(exc)}) from None
    with transaction.atomic():
        create = gateway_create if kind == Gateway.kind else node_create
        host = create(actor=actor, **fields)
        if ssh_private_key:
            host = host_credential_set(host=host, private_key=ssh_private_key, actor=actor)
        if draining:
            host = host_update(host=host, draining=True, actor=actor)
        if not enabled:
            host = host_update(host=host, enabled=False, actor=actor)
    return host


def host_update(*, host: Gateway | Node, actor: Any = None, **fields: Any) -> Gateway | Node:
    unknown = set(fields) - host_editable_fields(host.kind)
    if unknown:
        raise ValidationError({f: "This field cannot be changed here." for f in sorted(unknown)})
    if "draining" in fields and isinstance(host, Gateway):
        # Draining moves traffic and addresses: it is its own operation.
        draining = bool(fields.pop("draining"))
        if draining and not host.draining:
            gateway_drain(gateway=host, rehome=True, actor=actor)
        elif host.draining and not draining:
            gateway_undrain(gateway=host, actor=actor)
        host.refresh_from_db()
        if not fields:
            return host
    if "host_key" in fields:
        fields["host_key"] = _normalize_host_key(fields["host_key"])
    if "transit_address6" in fields:
        fields["transit_address6"] = _transit6(fields["transit_address6"])
    if "pod_cidrs" in fields:
        fields["pod_cidrs"] = normalize_cidr_list(fields["pod_cidrs"], what="pod CIDR")
        _refuse_orphaned_placements(host, fields["pod_cidrs"])
    before = {k: getattr(host, k) for k in fields}
    changed = {k: v for k, v in fields.items() if before[k] != v}
    if not changed:
        return host
    with transaction.atomic():
        for key, value in changed.items():
            setattr(host, key, value)
        if "host_key" in changed:
            host.host_key_mismatch_at = None
            host.presented_host_key = ""
        host.full_clean()
        host.save()
        kind = host.kind
        event_record(
            kind=f"{kind}.updated",
            message=f"{kind.capitalize()} {host.name} updated: {', '.join(sorted(changed))}.",
            actor=actor,
            **{kind: host},
            data={"before": {k: before[k] for k in changed}, "after": changed},
        )
        region_gateways = Gateway.objects.filter(region=host.region, enabled=True)
        region_nodes = Node.objects.filter(region=host.region, enabled=True)
        if isinstance(host, Gateway):
            reconcile_request(gateways=[host], nodes=region_nodes)
        else:
            reconcile_request(nodes=[host], gateways=region_gateways)
    return host


def _refuse_orphaned_placements(node: Node, pod_cidrs: list[str]) -> None:
    """A node keeps every pod CIDR its placements lie in (PostgreSQL's trigger is the last guard): the
    platform reports the node's new placements first, then the pod CIDRs can shrink."""
    pods = [ipam6.parse_network_any(p) for p in pod_cidrs]
    nets = [ipam6.parse_network_any(c) for c in Placement.objects.filter(node=node).values_list("cidr", flat=True)]
    outside = [
        str(net) for net in nets if not any(net.version == p.version and net.subnet_of(p) for p in pods)  # type: ignore[arg-type]
    ]
    if outside:
        raise ValidationError(
            {
                "pod_cidrs": f"{len(outside)} placement(s) on {node.name} would lie outside these pod CIDRs "
                f"(e.g. {outside[0]}); the platform must report the node's placements again first."
            }
        )


def host_accept_presented_key(*, host: Gateway | Node, actor: Any) -> Gateway | Node:
    """Pin the key a host presented after a mismatch: an explicit, audited staff decision."""
    if not host.presented_host_key:
        raise ValidationError("This host has not presented a different key.")
    kind = host.kind
    with transaction.atomic():
        old_key, new_key = host.host_key, host.presented_host_key
        host = host_update(host=host, host_key=new_key, actor=actor)
        event_record(
            kind="host.key_accepted",
            message=f"{kind.capitalize()} {host.name}: the presented SSH host key "
            f"({fingerprint(parse_host_key(new_key))}) was accepted and pinned.",
            actor=actor,
            **{kind: host},
            data={
                "before": {"host_key": old_key, "fingerprint": fingerprint(parse_host_key(old_key))},
                "after": {"host_key": new_key, "fingerprint": fingerprint(parse_host_key(new_key))},
            },
        )
    return host


def host_credential_set(*, host: Gateway | Node, private_key: str, actor: Any = None) -> Gateway | Node:
    """Store (or, with "", remove) the host's own SSH private key, encrypted at rest.

    The audit log says only that the credential changed: never the key, its
    ciphertext or its fingerprint's source text.
    """
    kind = host.kind
    if private_key:
        try:
            pkey = secrets.private_key_check(private_key)
            ciphertext = secrets.encrypt(private_key.strip() + "\n")
        except (ValueError, secrets.SecretsError) as exc:
            raise ValidationError({"ssh_private_key": str(exc)}) from None
        public = f"{pkey.get_name()} {pkey.fingerprint}"
    else:
        if not host.ssh_private_key_encrypted:
            return host
        ciphertext, public = "", ""
    with transaction.atomic():
        was_set = host.has_ssh_private_key
        host.ssh_private_key_encrypted = ciphertext
        type(host).objects.filter(pk=host.pk).update(ssh_private_key_encrypted=ciphertext)
        event_record(
            kind=f"{kind}.credential_changed",
            message=f"{kind.capitalize()} {host.name}: SSH credential "
            + ("changed." if ciphertext else "removed; the workers' default key is used again."),
            actor=actor,
            **{kind: host},
            # The public half's fingerprint lets an admin match the key in authorized_keys.
            data={"before": {"own_ssh_key": was_set}, "after": {"own_ssh_key": bool(ciphertext), "key": public}},
        )
        reconcile_request(**{f"{kind}s": [host]})
    return host


def host_delete(*, host: Gateway | Node, actor: Any = None) -> None:
    """Remove a host. A gateway that still holds egress addresses cannot go:
    drain it first so its addresses move to other gateways."""
    kind = host.kind
    with transaction.atomic():
        if isinstance(host, Gateway) and EgressIP.objects.filter(gateway=host).exists():
            raise ConflictError(
                f"Gateway {host.name} still holds egress addresses; drain it and wait until they have moved."
            )
        region, name = host.region, host.name
        event_record(kind=f"{kind}.deleted", message=f"{kind.capitalize()} {name} removed from {region.slug}.",
                     actor=actor, subject=name, data={"before": _snapshot(host)})
        host.delete()
        # The other side forgets the host: nodes drop its route table, gateways the routes to its pods.
        if isinstance(host, Gateway):
            reconcile_request(nodes=Node.objects.filter(region=region, enabled=True))
        else:
            reconcile_request(gateways=Gateway.objects.filter(region=region, enabled=True))
