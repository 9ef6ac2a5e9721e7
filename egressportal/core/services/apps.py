"""Apps and their egress desired state: the writes behind the portal, the API
and the admin. Each write records an event and asks the workers to reconcile
the hosts concerned once the transaction commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ..capacity import BEING_DELETED, egress_enable_refusal
from ..errors import ConflictError, DomainError
from ..models import (
    App,
    EgressIP,
    EgressIPStatus,
    EgressStatus,
    EgressType,
    Event,
    HostSync,
    Placement,
    Region,
)
from ..validators import validate_app_name
from .egress6 import pools_lock_for_ipv6
from .events import event_build, event_record
from .network import ALLOCATION_ATTEMPTS, egress_ips_allocate, egress_ips_allocate_many
from .quotas import quota_check_addresses, quota_check_apps, quota_lock_owner, quota_room
from .reconcile import host_syncs_renew, reconcile_request

__all__ = [
    "app_create",
    "app_update",
    "app_delete",
    "EnableOutcome",
    "egress_enable",
    "egress_enable_many",
    "egress_disable",
    "egress_set",
    "app_hosts_mark_pending",
    "host_syncs_renew",
]


def app_create(*, owner: Any, region: Region, name: str, actor: Any = None) -> App:
    """A new app of ``owner`` in ``region``: by the owner itself, or by the platform or staff for an
    owner. Where it runs is not part of it: the platform reports placements (services/placements.py)."""
    validate_app_name(name)
    with transaction.atomic():
        if App.objects.filter(owner=owner, name=name).exists():
            raise ValidationError({"name": f"You already have an app named {name}."})
        quota_check_apps(owner=owner)
        app = App(owner=owner, region=region, name=name)
        app.full_clean()
        app.save()
        event_record(
            kind="app.created",
            message=f"App {name} created in {region.slug}.",
            actor=actor or owner,
            app=app,
            data={"after": {"region": region.slug, "owner": getattr(owner, "pk", owner)}},
        )
    return app


def app_hosts_mark_pending(app: App, *, gateways: Sequence[Any] = (), nodes: Sequence[Any] = ()) -> None:
    """Record that these hosts owe ``app`` a reconcile towards its state as of now (host_syncs_renew)."""
    host_syncs_renew(
        [HostSync(app=app, gateway_id=getattr(g, "pk", g)) for g in gateways]
        + [HostSync(app=app, node_id=getattr(n, "pk", n)) for n in nodes]
    )


def _assigned(app: App) -> QuerySet[EgressIP]:
    return EgressIP.objects.filter(app=app, status=EgressIPStatus.ASSIGNED).select_related("gateway")


def _assigned_ips(app: App) -> list[EgressIP]:
    """The app's assigned addresses with their gateways, in address order (an address with an app is
    assigned and on a gateway: a constraint of the model)."""
    return list(_assigned(app))


def _holding(app: App, ips: Sequence[EgressIP]) -> App:
    """``app`` with ``ips`` (its assigned addresses with their gateways, as this write leaves them) where
    ``app.egress_ips.all()`` finds them, as ``selectors.app_list``'s prefetch puts them: the caller answers
    from what the write holds instead of reading the app and its addresses again."""
    cached = _assigned(app)
    cached._result_cache = list(ips)
    cached._prefetch_done = True
    app._prefetched_objects_cache = {**getattr(app, "_prefetched_objects_cache", {}), "egress_ips": cached}
    return app


def _placed_node_ids(app: App) -> list[int]:
    """The nodes the app runs on: a toggle reconciles these and the app's gateways, nothing else."""
    return list(
        Placement.objects.filter(app=app, node__enabled=True).values_list("node_id", flat=True).distinct().order_by()
    )


def _bump(app: App, *, status: str, message: str, now: Any) -> None:
    app.egress_status = status
    app.egress_message = message
    app.egress_updated_at = now
    app.egress_requested_at = now
    # The caller holds the app's row lock (every writer of the generation takes it first), so the value
    # read under it plus one is what the increment writes: no read-back.
    generation = app.egress_generation + 1
    app.egress_generation = F("egress_generation") + 1
    app.save(
        update_fields=[
            "egress_type", "egress_status", "egress_message", "egress_updated_at",
            "egress_requested_at", "egress_generation", "updated_at",
        ]
    )
    app.egress_generation = generation


def app_update(*, app: App, name: str | None = None, actor: Any = None) -> App:
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        if name is not None and name != app.name:
            validate_app_name(name)
            if App.objects.filter(owner=app.owner_id, name=name).exclude(pk=app.pk).exists():
                raise ValidationError({"name": f"You already have an app named {name}."})
            before = {"name": app.name}
            app.name = name
            app.save(update_fields=["name", "updated_at"])
            event_record(
                kind="app.updated",
                message=f"App {app.name} updated: name.",
                actor=actor,
                app=app,
                data={"before": before, "after": {"name": name}},
            )
    return app


def app_delete(*, app: App, actor: Any = None) -> bool:
    """Delete an app. With dedicated egress, egress is first disabled and the
    app disappears once its addresses are off every host; returns True when
    it was deleted at once, False when deletion is pending."""
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        if not app.egress_ips.exists() and not app.host_syncs.exists():
            name = app.name
            before = {
                "name": name,
                "owner": app.owner.get_username(),
                "region": app.region.slug,
                "placements": sorted(app.placements.values_list("cidr", flat=True)),
            }
            event_record(
                kind="app.deleted", message=f"App {name} deleted.", actor=actor, app=app, subject=name,
                data={"before": before},
            )
            app.delete()
            return True
        app.delete_requested = True
        app.save(update_fields=["delete_requested", "updated_at"])
        if app.egress_type == EgressType.DEDICATED:
            _disable(app, actor=actor, reason="App deletion requested.")
        event_record(
            kind="app.delete_requested",
            message=f"App {app.name} will be deleted once its egress addresses are released.",
            actor=actor,
            app=app,
        )
    return False


def egress_enable(*, app: App, actor: Any = None) -> tuple[App, bool]:
    """Ask for dedicated egress. Returns (app, changed), the app holding its assigned addresses (see
    ``egress_set``). Allocation happens here, so an exhausted pool or a region without gateways is refused
    before anything half-happens (PoolExhausted / NoGatewaysAvailable, nothing is written)."""
    with transaction.atomic():
        app = App.objects.select_for_update(of=("self",)).select_related("region").get(pk=app.pk)
        if app.delete_requested:
            raise ConflictError(BEING_DELETED)
        if app.is_dedicated and app.egress_status != EgressStatus.FAILED:
            return _holding(app, _assigned_ips(app)), False
        refusal = egress_enable_refusal(app)
        if refusal:
            raise ConflictError(refusal)
        before = {"type": app.egress_type, "status": app.egress_status}
        quota_lock_owner(owner=app.owner_id)
        ips = egress_ips_allocate(app=app)
        # Counted after allocating: re-enabling takes back the tenant's own quarantined addresses,
        # which counted already. Over the quota, this transaction rolls back the allocation.
        quota_check_addresses(owner=app.owner_id)
        now = timezone.now()
        app.egress_type = EgressType.DEDICATED
        _bump(app, status=EgressStatus.ASSIGNING, message="Configuring gateways.", now=now)
        gateways = [ip.gateway_id for ip in ips]
        app_hosts_mark_pending(app, gateways=gateways, nodes=_placed_node_ids(app))
        event_record(
            kind="egress.enable_requested",
            message="Dedicated egress requested: " + ", ".join(ip.address for ip in ips) + ".",
            actor=actor,
            app=app,
            data={
                "addresses": [ip.address for ip in ips],
                "generation": app.egress_generation,
                "before": before,
                "after": {"type": app.egress_type, "status": app.egress_status},
            },
        )
        # Make before break: gateways first; they trigger the nodes when done.
        reconcile_request(gateways=gateways)
    return _holding(app, ips), True


@dataclass
class EnableOutcome:
    """What enabling one app of a batch did: changed (False: it was dedicated already), or why not."""

    changed: bool = False
    error: Exception | None = None


def egress_enable_many(*, apps: Sequence[App], actor: Any = None) -> dict[int, EnableOutcome]:
    """Ask for dedicated egress for many apps in one transaction (the bulk API). Each app is decided as
    ``egress_enable`` decides it (same refusals, allocator rules and quotas) and fails alone (its outcome
    carries the error; it is left unchanged); the others go ahead.

    The common case (the app holds no address and has none to take back) is done for all apps at once:
    apps and owners locked in one query each, the addresses (with their IPv6 partners where the region has
    IPv6 pools) picked by ``egress_ips_allocate_many``, the apps, host syncs and events written in bulk,
    and one reconcile request for all the gateways on commit.
    Any other app goes through ``egress_enable`` itself, in a savepoint, after them."""
    for attempt in range(ALLOCATION_ATTEMPTS):
        try:
            with transaction.atomic():
                return _enable_many([a.pk for a in apps], actor=actor)
        except IntegrityError:
            # A free row was claimed by someone else between our read and write (only without row locks).
            if attempt == ALLOCATION_ATTEMPTS - 1:
                raise ConflictError("Egress addresses are being allocated concurrently; try again.") from None
    raise AssertionError("unreachable")


def _enable_many(pks: list[int], *, actor: Any) -> dict[int, EnableOutcome]:
    out = {pk: EnableOutcome() for pk in pks}
    # Locked in one query (in pk order, as concurrent batches do), then decided in the request's order.
    locked = App.objects.select_for_update(of=("self",)).select_related("region").filter(pk__in=pks).order_by("pk")
    by_pk = {app.pk: app for app in locked}
    candidates: list[App] = []
    for app in (by_pk[pk] for pk in pks if pk in by_pk):
        refusal = BEING_DELETED if app.delete_requested else egress_enable_refusal(app)
        if refusal:
            out[app.pk].error = ConflictError(refusal)
        elif not (app.is_dedicated and app.egress_status != EgressStatus.FAILED):
            candidates.append(app)
    if not candidates:
        return out
    owners = sorted({app.owner_id for app in candidates})
    for owner_id in owners:
        quota_lock_owner(owner=owner_id)
    # Apps that hold addresses (a failed enable) or may take some back go the long way.
    ids = [app.pk for app in candidates]
    special = set(EgressIP.objects.filter(app_id__in=ids, status=EgressIPStatus.ASSIGNED).values_list("app_id", flat=True))
    reusable = EgressIP.objects.filter(status=EgressIPStatus.QUARANTINED).filter(
        Q(last_app_id__in=ids) | (Q(last_owner_id__in=owners) & ~Q(last_app__egress_type=EgressType.DEDICATED))
    )
    back_apps, back_owners = set(), set()
    for last_app, last_owner in reusable.values_list("last_app_id", "last_owner_id"):
        back_apps.add(last_app)
        back_owners.add(last_owner)
    # Regions with IPv6: their pools locked now, in the enable path's order (IPv4 pools, then IPv6 ones), so
    # the apps that go the long way below never wait for an IPv4 pool while this holds an IPv6 one.
    pools_lock_for_ipv6({a.region_id for a in candidates})
    common = [a for a in candidates if a.pk not in special and a.pk not in back_apps and a.owner_id not in back_owners]
    budget = {owner_id: quota_room(owner=owner_id) for owner_id in owners}
    served = egress_ips_allocate_many(apps=common, budget=budget)
    _enabled_in_bulk([a for a in common if a.pk in served], served, actor=actor)
    for app in candidates:
        if app.pk in served:
            out[app.pk].changed = True
            continue
        try:
            with transaction.atomic():
                out[app.pk].changed = egress_enable(app=app, actor=actor)[1]
        except (DomainError, ValidationError) as exc:  # refused (pools, gateways, quota): this app alone
            out[app.pk].error = exc
    return out


def _enabled_in_bulk(apps: list[App], served: dict[int, list[EgressIP]], *, actor: Any) -> None:
    """The writes of egress_enable after its allocation, for many apps in a few queries."""
    if not apps:
        return
    now = timezone.now()
    before = {app.pk: {"type": app.egress_type, "status": app.egress_status} for app in apps}
    App.objects.filter(pk__in=[a.pk for a in apps]).update(
        egress_type=EgressType.DEDICATED, egress_status=EgressStatus.ASSIGNING, egress_message="Configuring gateways.",
        egress_updated_at=now, egress_requested_at=now, egress_generation=F("egress_generation") + 1, updated_at=now,
    )
    generation = dict(App.objects.filter(pk__in=[a.pk for a in apps]).values_list("pk", "egress_generation"))
    nodes: dict[int, set[int]] = {}
    for app_id, node_id in Placement.objects.filter(app__in=apps, node__enabled=True).values_list("app_id", "node_id"):
        nodes.setdefault(app_id, set()).add(node_id)
    syncs, events, gateways = [], [], set()
    for app in apps:
        ips = served[app.pk]
        app.egress_type, app.egress_status, app.egress_message = (
            EgressType.DEDICATED, EgressStatus.ASSIGNING, "Configuring gateways.")
        app.egress_updated_at = app.egress_requested_at = now
        app.egress_generation = generation[app.pk]
        gateways.update(ip.gateway_id for ip in ips)
        syncs += [HostSync(app=app, gateway_id=ip.gateway_id) for ip in ips]
        syncs += [HostSync(app=app, node_id=n) for n in sorted(nodes.get(app.pk, ()))]
        events.append(event_build(
            kind="egress.enable_requested",
            message="Dedicated egress requested: " + ", ".join(ip.address for ip in ips) + ".",
            actor=actor,
            app=app,
            data={
                "addresses": [ip.address for ip in ips],
                "generation": app.egress_generation,
                "before": before[app.pk],
                "after": {"type": app.egress_type, "status": app.egress_status},
            },
        ))
    host_syncs_renew(syncs)
    Event.objects.bulk_create(events, batch_size=500)
    # Make before break: gateways first; they trigger the nodes when done (one request for the batch).
    reconcile_request(gateways=sorted(gateways))


def _disable(app: App, *, actor: Any, reason: str) -> list[EgressIP]:
    """Returns the app's addresses (still assigned: they go to quarantine once off every host)."""
    now = timezone.now()
    before = {"type": app.egress_type, "status": app.egress_status}
    app.egress_type = EgressType.SHARED
    ips = _assigned_ips(app)
    has_ips = bool(ips)
    _bump(
        app,
        status=EgressStatus.RELEASING if has_ips else EgressStatus.DISABLED,
        message="Removing steering from nodes." if has_ips else "",
        now=now,
    )
    gateways, nodes = [ip.gateway_id for ip in ips], _placed_node_ids(app)
    if has_ips:
        app_hosts_mark_pending(app, gateways=gateways, nodes=nodes)
    event_record(
        kind="egress.disable_requested",
        message=reason,
        actor=actor,
        app=app,
        data={"before": before, "after": {"type": app.egress_type, "status": app.egress_status}},
    )
    # Break in reverse: nodes stop steering first; they trigger the gateways. An app that runs nowhere
    # is steered by no node: its gateways can let go at once.
    if has_ips and nodes:
        reconcile_request(nodes=nodes)
    elif has_ips:
        reconcile_request(gateways=gateways)
    return ips


def egress_disable(*, app: App, actor: Any = None) -> tuple[App, bool]:
    """Go back to shared egress. Returns (app, changed), the app holding its assigned addresses (see
    ``egress_set``)."""
    with transaction.atomic():
        app = App.objects.select_for_update().get(pk=app.pk)
        if app.egress_type == EgressType.SHARED and app.egress_status != EgressStatus.FAILED:
            return _holding(app, _assigned_ips(app)), False
        ips = _disable(app, actor=actor, reason="Shared egress requested.")
    return _holding(app, ips), True


def egress_set(*, app: App, egress_type: str, actor: Any = None) -> tuple[App, bool]:
    """Dedicated or shared egress for ``app``. Returns (app, changed): the app as the write left it, its
    assigned addresses (with their gateways) in ``app.egress_ips.all()``, read inside the write's
    transaction, so an answer needs no second read (``selectors.egress_summary``)."""
    if egress_type not in (EgressType.DEDICATED, EgressType.SHARED):
        raise ValidationError({"type": f"Unknown egress type {egress_type!r}; use 'dedicated' or 'shared'."})
    action = egress_enable if egress_type == EgressType.DEDICATED else egress_disable
    for attempt in range(3):
        try:
            return action(app=app, actor=actor)
        except OperationalError as exc:
            # The database broke a lock cycle by aborting us: nothing was
            # written, so trying again is safe.
            if "deadlock" not in str(exc).lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")

