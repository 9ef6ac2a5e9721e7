"""The domain's side of a reconcile: what a host's success or failure means for the apps.

The worker (workers/reconcile.py) talks to the host; it reports here. A success marks addresses
programmed, settles the sync rows the applied plan settles, records events and moves the apps forward
(``apps_settle``: make before break, see docs/ARCHITECTURE.md), all apps at once in one transaction;
a failure is shown on the apps that were waiting for the host.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, TextField, Value, When
from django.utils import timezone

from ...ops import instruments
from ..desired import GatewayPlan, NodePlan
from ..models import (
    App,
    EgressIP,
    EgressIPRole,
    EgressStatus,
    EgressType,
    Event,
    EventLevel,
    Gateway,
    HealthStatus,
    HostSync,
    Node,
)
from ..rules.health import AppAddress, app_egress_health
from ..rules.settle import settle_step
from ..signals import StatusChange, egress_status_changed
from ..tenant_messages import host_security_message, reconcile_failure_message
from .drain import drain_progress
from .events import WORKER, event_build, event_record
from .network import egress_ips_release_many
from .reconcile import reconcile_request

__all__ = [
    "app_health_status",
    "app_settle",
    "apps_settle",
    "app_status_set",
    "apps_status_set",
    "host_key_mismatch_record",
    "host_pending_apps",
    "host_reconcile_failed",
    "host_reconcile_succeeded",
]

logger = logging.getLogger(__name__)


def _host_kw(host: Gateway | Node) -> dict[str, Any]:
    return {host.kind: host}


def _label(host: Gateway | Node) -> str:
    return host.kind.capitalize()


def host_pending_apps(host: Gateway | Node) -> set[int]:
    """Apps that wait for this host (their sync rows name it)."""
    return set(HostSync.objects.filter(**_host_kw(host)).values_list("app_id", flat=True))


def host_reconcile_succeeded(
    *, host: Gateway | Node, plan: GatewayPlan | NodePlan, changed: bool, summary: str, changes: Iterable[str], duration: float
) -> int:
    """Record an applied and verified plan and settle the apps it caught up, in one transaction whose
    queries do not grow with the number of apps (``apps_settle``); returns how many apps it settled."""
    instruments.reconcile_succeeded(host=host, duration=duration)
    now = timezone.now()
    is_gateway = isinstance(host, Gateway)
    with transaction.atomic():
        # Only the apps whose rows this bookkeeping writes are locked: the addresses whose "programmed"
        # flags change and the apps whose sync rows it settles. A steady reconcile of a gateway holding
        # 10,000 addresses thus locks nothing and passes no list of 10,000 ids (the plan's), which cost
        # more than the rest of the bookkeeping together. Same lock order as the services (app rows
        # first, in pk order, then their addresses and syncs), so a toggle racing this waits instead of
        # deadlocking; the flags are checked again under the locks.
        flips = _programmed_flips(host, plan) if isinstance(plan, GatewayPlan) else _Flips()
        settling = set(HostSync.objects.filter(pk__in=plan.settles).values_list("app_id", flat=True))
        locked = _apps_locked(flips.apps | settling)
        _programmed_write(flips)
        # The host's row before its sync rows, as a placements report takes them (the node's row, then the
        # syncs it renews): the other way round, each waited for the other ("deadlock detected").
        fields = {
            "last_reconciled_at": now,
            "last_reconcile_duration": duration,
            "last_reconcile_error": "",
            "reconcile_failures": 0,
            "reconcile_retry_at": None,
            "last_seen_at": now,
        }
        if changed:
            fields["reconcile_count"] = F("reconcile_count") + 1
        type(host).objects.filter(pk=host.pk).update(**fields)
        # Only the rows this reconcile read before its state: a toggle since then renewed its row (a new
        # id, services/reconcile.py host_syncs_renew), which stays for the next reconcile. Read again
        # under the locks: a row can only have gone since, so these apps are among the locked ones.
        settled_apps = set(HostSync.objects.filter(pk__in=plan.settles).values_list("app_id", flat=True))
        HostSync.objects.filter(pk__in=plan.settles).delete()
        events: list[Event] = []
        if changed:
            events.append(event_build(
                kind=f"{host.kind}.reconciled",
                message=f"{host.name}: {summary} in {duration * 1000:.0f} ms.",
                actor=WORKER,
                data={"duration_ms": round(duration * 1000, 1), "changes": list(changes)},
                **_host_kw(host),
            ))
        apps = [app for app in locked if app.pk in settled_apps]  # locked above, in pk order
        events += [
            event_build(
                kind=f"egress.{host.kind}_configured",
                message=f"{_label(host)} {host.name} configured.",
                actor=WORKER,
                app=app,
                data={"duration_ms": round(duration * 1000, 1)},
                **_host_kw(host),
            )
            for app in apps
        ]
        Event.objects.bulk_create(events, batch_size=_BATCH)
        follow = _settle(apps, now=now)
        if is_gateway:
            # Another gateway holding its lease now (being reconciled) settles these apps itself in a moment:
            # its run either read their sync rows already, or a request that found it held made it run
            # again (workers/reconcile.py). Asking it again only costs it a rerun; asking the nodes now
            # would have them steer twice back to back (towards this gateway, then both).
            held = _gateways_held({g for app in apps for g in follow.gateways_owing.get(app.pk, ())} - {host.pk})
            follow.gateways -= held
            # Make before break: the nodes that owe these apps may now steer towards what this gateway holds;
            # unless another of the app's gateways is at work: it asks them when done (or, failing, asks
            # them: host_reconcile_failed), and the nodes then steer once, towards both.
            follow.nodes |= {
                n
                for app in apps
                if not follow.gateways_owing.get(app.pk, set()) & held
                for n in follow.nodes_owing.get(app.pk, ())
            }
        # One request for everything this settle gave work to, sent once the settle commits.
        reconcile_request(gateways=sorted(follow.gateways), nodes=sorted(follow.nodes))
    if not is_gateway:
        try:
            drain_progress(region_id=host.region_id)
        except Exception:  # the reconcile itself succeeded; the sweep retries this
            logger.exception("drain progress after reconciling %s failed", host.name)
    return len(settled_apps)


@dataclass
class _Flips:
    """The addresses whose "programmed" flags an applied gateway plan changes, and their apps."""

    program: list[int] = field(default_factory=list)
    program6: list[int] = field(default_factory=list)
    unprogram: list[int] = field(default_factory=list)
    apps: set[int] = field(default_factory=set)


def _programmed_flips(host: Gateway, plan: GatewayPlan) -> _Flips:
    """Which flags the applied plan flips: live addresses not yet marked programmed, IPv6 partners of live
    addresses (IPv6 backfill) that this applied state held, and removed addresses still marked. One query
    whatever the data, over the gateway's own rows that may flip (a handful in the steady state) rather
    than by the plan's ids of every address held; an address that moved to another gateway since the plan
    is not this one's to mark."""
    flips = _Flips()
    live, removed = set(plan.live_ip_ids), set(plan.removed_ip_ids)
    held6 = {str(a) for a in plan.state.addresses if a.version == 6}
    may_flip = Q(programmed=False) | Q(programmed6=False, address6__isnull=False)
    if removed:  # (an empty IN would drop out of the OR anyway; spelled out for the reader)
        may_flip |= Q(pk__in=removed, programmed=True)
    rows = EgressIP.objects.filter(gateway_id=host.pk).filter(may_flip)
    for pk, app_id, programmed, programmed6, address6 in rows.values_list(
        "pk", "app_id", "programmed", "programmed6", "address6"
    ):
        flipped = False
        if pk in live and not programmed:
            flips.program.append(pk)
            flipped = True
        if pk in live and address6 and not programmed6 and address6 in held6:
            flips.program6.append(pk)
            flipped = True
        if pk in removed and programmed:
            flips.unprogram.append(pk)
            flipped = True
        if flipped and app_id is not None:
            flips.apps.add(app_id)
    return flips


def _gateways_held(ids: set[int]) -> set[int]:
    """Which of these gateways hold their lease now (one query; none when ``ids`` is empty, as in the
    steady state: only an app still owed by another gateway, mid toggle, names one)."""
    if not ids:
        return set()
    return set(
        Gateway.objects.filter(pk__in=ids, lease_expires_at__gt=timezone.now())
        .exclude(lease_token="")
        .values_list("pk", flat=True)
    )


def _programmed_write(flips: _Flips) -> None:
    """The flips in one UPDATE (none when nothing flips), so the bookkeeping's queries do not depend on
    which kinds of flag flip."""
    ids = {*flips.program, *flips.program6, *flips.unprogram}
    if not ids:
        return
    fields: dict[str, Any] = {}
    if flips.program or flips.unprogram:
        whens = [When(pk__in=flips.program, then=Value(True))] if flips.program else []
        whens += [When(pk__in=flips.unprogram, then=Value(False))] if flips.unprogram else []
        fields["programmed"] = Case(*whens, default=F("programmed"))
    if flips.program6:
        fields["programmed6"] = Case(When(pk__in=flips.program6, then=Value(True)), default=F("programmed6"))
    EgressIP.objects.filter(pk__in=ids).update(**fields)


def app_settle(*, app_id: int) -> tuple[set[int], set[int]]:
    """Move one app forward once hosts caught up; returns (gateway ids, node ids) that now have work
    because of it (the caller asks for them). ``apps_settle`` for one app."""
    return apps_settle(app_ids=[app_id])


def apps_settle(*, app_ids: Iterable[int]) -> tuple[set[int], set[int]]:
    """Move these apps forward once hosts caught up (``rules/settle.py`` decides each app; the reads and
    writes are done for all of them at once); returns (gateway ids, node ids) that now have work because
    of them."""
    with transaction.atomic():
        follow = _settle(_apps_locked(set(app_ids)), now=timezone.now())
    return follow.gateways, follow.nodes


# bulk_create / bulk_update batches: one query per batch on PostgreSQL for a burst of 1,000 apps.
_BATCH = 1000


def _apps_locked(app_ids: set[int]) -> list[App]:
    """The apps' rows, locked in pk order (the order of every other writer of app rows)."""
    if not app_ids:
        return []
    return list(App.objects.select_for_update(of=("self",)).filter(pk__in=app_ids).order_by("pk"))


@dataclass
class _Follow:
    gateways: set[int] = field(default_factory=set)
    nodes: set[int] = field(default_factory=set)
    # app id -> the nodes and the gateways that still owe it a reconcile (after the settle)
    nodes_owing: dict[int, set[int]] = field(default_factory=dict)
    gateways_owing: dict[int, set[int]] = field(default_factory=dict)


def _settle(apps: list[App], *, now: dt.datetime) -> _Follow:
    """The settle of ``apps`` (locked by the caller): what is left per app, one ``settle_step`` each,
    then the writes in bulk. Queries: a fixed number whatever the number of apps (the status writes
    take one per distinct status and message; a deleted app's rows are deleted with the app)."""
    follow = _Follow()
    if not apps:
        return follow
    ids = [app.pk for app in apps]
    gateways_left: dict[int, set[int]] = defaultdict(set)
    nodes_left: dict[int, set[int]] = defaultdict(set)
    for app_id, gateway_id, node_id in HostSync.objects.filter(app_id__in=ids).values_list("app_id", "gateway_id", "node_id"):
        if gateway_id:
            gateways_left[app_id].add(gateway_id)
        if node_id:
            nodes_left[app_id].add(node_id)
    follow.nodes_owing = nodes_left
    follow.gateways_owing = gateways_left
    steps = {
        app.pk: settle_step(
            dedicated=app.egress_type == EgressType.DEDICATED,
            status=app.egress_status,
            message=app.egress_message,
            gateways_left=gateways_left.get(app.pk, set()),
            nodes_left=nodes_left.get(app.pk, set()),
        )
        for app in apps
    }
    writes: list[tuple[App, str, str]] = []
    events: list[Event] = []
    healthy = [app for app in apps if steps[app.pk].from_health]
    addresses = _app_addresses([app.pk for app in healthy])
    for app in apps:
        step = steps[app.pk]
        follow.gateways |= step.follow_gateways
        follow.nodes |= step.follow_nodes
        if step.status is not None:
            writes.append((app, step.status, step.message))
        if not step.from_health:
            continue
        status, message = app_egress_health(addresses.get(app.pk, []), ips_per_app=settings.EGRESS_IPS_PER_APP)
        if (status, message) == (app.egress_status, app.egress_message):
            continue
        writes.append((app, status, message))
        if status == EgressStatus.ASSIGNED and app.egress_status != status:
            latency = (now - app.egress_requested_at).total_seconds() if app.egress_requested_at else None
            instruments.toggle_assigned(latency)
            events.append(event_build(
                kind="egress.assigned",
                message="Dedicated egress is live: " + ", ".join(a.address for a in addresses.get(app.pk, [])) + ".",
                actor=WORKER,
                app=app,
                data={"latency_ms": round(latency * 1000, 1) if latency is not None else None},
            ))
    released_apps = [app for app in apps if steps[app.pk].release]
    released = egress_ips_release_many(apps=released_apps, now=now)
    for app in released_apps:
        writes.append((app, EgressStatus.DISABLED, ""))
        if released.get(app.pk):
            events.append(_disabled_event(app, released[app.pk]))
    apps_status_set(writes, now)
    deleted = [app for app in released_apps if app.delete_requested]
    events += [
        event_build(kind="app.deleted", message=f"App {app.name} deleted.", actor=WORKER, app=app, subject=app.name)
        for app in deleted
    ]
    Event.objects.bulk_create(events, batch_size=_BATCH)
    if deleted:
        App.objects.filter(pk__in=[app.pk for app in deleted]).delete()
    return follow


def _disabled_event(app: App, released: list[str]) -> Event:
    return event_build(
        kind="egress.disabled",
        # In the owner's words: what "quarantine" means for their allow-lists.
        message=f"Back to shared egress. {', '.join(released)} "
        f"{'stays' if len(released) == 1 else 'stay'} reserved for this app for "
        f"{settings.EGRESS_QUARANTINE_DAYS} days; enabling dedicated egress again brings "
        f"{'it' if len(released) == 1 else 'them'} back.",
        actor=WORKER,
        app=app,
        data={"released": released, "quarantine_days": settings.EGRESS_QUARANTINE_DAYS},
    )


def _app_addresses(app_ids: list[int]) -> dict[int, list[AppAddress]]:
    """Each app's addresses (in address order) with its gateways' health, for rules/health.py, in one query."""
    out: dict[int, list[AppAddress]] = defaultdict(list)
    if not app_ids:
        return out
    rows = EgressIP.objects.filter(app_id__in=app_ids).order_by("address_int").values_list(
        "app_id", "address", "role", "gateway__name", "gateway__health"
    )
    for app_id, address, role, gateway, health in rows:
        out[app_id].append(AppAddress(address, role == EgressIPRole.ACTIVE, gateway, health == HealthStatus.UNHEALTHY))
    return out


def app_health_status(app: App) -> tuple[str, str]:
    """assigned, or degraded with the reason, from the health of the app's gateways (rules/health.py)."""
    return app_egress_health(_app_addresses([app.pk]).get(app.pk, []), ips_per_app=settings.EGRESS_IPS_PER_APP)


def app_status_set(app: App, status: str, message: str, now: dt.datetime) -> None:
    """Write one app's egress status (``apps_status_set``)."""
    apps_status_set([(app, status, message)], now)


def apps_status_set(writes: Sequence[tuple[App, str, str]], now: dt.datetime) -> None:
    """Write apps' egress statuses (the rows and the objects in hand; an app written twice ends with its
    last write): one update per distinct status, whatever the messages (an app's own message, e.g. a
    failover naming its standby address, is set by a CASE on the pk). The apps whose status itself changed
    are announced with one ``signals.egress_status_changed`` (notifications listen), each change once."""
    final: dict[int, tuple[App, str, str]] = {}
    old: dict[int, str] = {}
    for app, status, message in writes:
        old.setdefault(app.pk, app.egress_status)
        final[app.pk] = (app, status, message)
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for app, status, message in final.values():
        groups[status][message].append(app.pk)
        app.egress_status, app.egress_message, app.egress_updated_at = status, message, now
    for status, by_message in groups.items():
        pks = [pk for group in by_message.values() for pk in group]
        if len(by_message) == 1:
            message: Any = next(iter(by_message))
        else:
            message = Case(
                *(When(pk__in=group, then=Value(text)) for text, group in by_message.items()),
                default=F("egress_message"),
                output_field=TextField(),
            )
        App.objects.filter(pk__in=pks).update(egress_status=status, egress_message=message, egress_updated_at=now)
    changes = [
        StatusChange(app, old[app.pk], status, message) for app, status, message in final.values() if status != old[app.pk]
    ]
    if changes:
        egress_status_changed.send(sender=App, changes=changes)


def apps_failure_status(apps: Sequence[App]) -> dict[int, str]:
    """What a failed reconcile makes of apps waiting for the host: "failed" only when an app's traffic
    cannot use dedicated egress (nothing steered to a live address yet, or on its way back to shared);
    an app whose traffic already leaves from a dedicated address is "degraded" while the workers retry.
    Two queries for any number of apps."""
    undecided = [
        app.pk for app in apps
        if app.egress_type == EgressType.DEDICATED and app.egress_status not in (EgressStatus.ASSIGNED, EgressStatus.DEGRADED)
    ]
    not_steered = set(HostSync.objects.filter(app_id__in=undecided, node__isnull=False).values_list("app_id", flat=True))
    live = set(EgressIP.objects.filter(app_id__in=undecided, programmed=True).values_list("app_id", flat=True))
    out: dict[int, str] = {}
    for app in apps:
        if app.egress_type != EgressType.DEDICATED:
            out[app.pk] = EgressStatus.FAILED
        elif app.egress_status in (EgressStatus.ASSIGNED, EgressStatus.DEGRADED):
            out[app.pk] = EgressStatus.DEGRADED
        else:
            steering = app.pk not in not_steered
            out[app.pk] = EgressStatus.DEGRADED if steering and app.pk in live else EgressStatus.FAILED
    return out


def host_reconcile_failed(
    *, host: Gateway | Node, reason: str, app_ids: set[int], duration: float, ssh_error_kind: str | None
) -> None:
    """Record a failed reconcile on the host and on the apps that wait for it."""
    instruments.reconcile_failed(host=host, ssh_error_kind=ssh_error_kind, duration=duration)
    now = timezone.now()
    model = type(host)
    failures = host.reconcile_failures + 1
    model.objects.filter(pk=host.pk).update(
        last_reconcile_error=reason, reconcile_failures=failures, last_reconcile_duration=duration
    )
    # Staff read the reason (the host's row and event, the log); it can name management addresses and ports
    # and quote nft output about other tenants' apps, so the apps' owners get it in their own words.
    message = f"{_label(host)} {host.name} could not be configured: {reason}. Retrying automatically."
    tenant_message = reconcile_failure_message(host_kind=host.kind, host_name=host.name, error_kind=ssh_error_kind)
    with transaction.atomic():
        if failures == 1 or failures % 10 == 0:
            event_record(
                kind=f"{host.kind}.reconcile_failed",
                message=message,
                level=EventLevel.ERROR,
                actor=WORKER,
                data={"error": reason, "attempt": failures},
                **_host_kw(host),
            )
        pending = list(App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct().order_by("pk"))
        failure = apps_failure_status(pending)
        writes: list[tuple[App, str, str]] = []
        events: list[Event] = []
        for app in pending:
            status = failure[app.pk]
            if (status, tenant_message) == (app.egress_status, app.egress_message):
                continue
            writes.append((app, status, tenant_message))
            if status != app.egress_status or status == EgressStatus.FAILED:
                failed = status == EgressStatus.FAILED
                events.append(event_build(
                    kind="egress.failed" if failed else "egress.degraded",
                    message=tenant_message,
                    level=EventLevel.ERROR if failed else EventLevel.WARNING,
                    actor=WORKER,
                    app=app,
                    **_host_kw(host),
                ))
        apps_status_set(writes, now)
        Event.objects.bulk_create(events, batch_size=_BATCH)
        if isinstance(host, Gateway) and pending:
            # The nodes these apps wait on may have been left to this gateway (see
            # host_reconcile_succeeded): they steer towards the app's other live gateway meanwhile.
            reconcile_request(nodes=sorted(set(
                HostSync.objects.filter(app__in=pending, node__isnull=False).values_list("node_id", flat=True)
            )))
    logger.warning("reconcile of %s %s failed: %s", host.kind, host.name, reason)


def host_key_mismatch_record(
    *, host: Gateway | Node, app_ids: set[int], presented_key: str, expected_fingerprint: str, presented_fingerprint: str
) -> None:
    """A host presented another SSH host key than the pinned one: a security event for staff, a short
    notice for the apps waiting for it. Nothing was sent to the host."""
    instruments.reconcile_failed(host=host, ssh_error_kind="host_key_mismatch")
    now = timezone.now()
    first = host.host_key_mismatch_at is None
    type(host).objects.filter(pk=host.pk).update(
        host_key_mismatch_at=host.host_key_mismatch_at or now,
        presented_host_key=presented_key or host.presented_host_key,
        last_reconcile_error="Host key mismatch: refused to connect.",
        reconcile_failures=host.reconcile_failures + 1,
    )
    message = (
        f"SECURITY: {host.name} presented a different SSH host key ({presented_fingerprint}) than the pinned one "
        f"({expected_fingerprint}). Nothing was sent to it. A platform admin must verify the host and accept the new key."
    )
    with transaction.atomic():
        if first:
            event_record(
                kind="host.key_mismatch",
                message=message,
                level=EventLevel.ERROR,
                actor=WORKER,
                data={"expected": str(expected_fingerprint), "presented": str(presented_fingerprint)},
                **_host_kw(host),
            )
        user_message = host_security_message(host_kind=host.kind, host_name=host.name)
        # All the waiting apps in one write (one update per status, one announcement), whatever their number.
        apps_status_set(
            [
                (app, EgressStatus.DEGRADED if app.egress_status == EgressStatus.ASSIGNED else EgressStatus.FAILED,
                 user_message)
                for app in App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct().order_by("pk")
                if app.egress_message != user_message
            ],
            now,
        )
    logger.error(
        "host key mismatch on %s %s: expected %s, presented %s",
        host.kind, host.name, expected_fingerprint, presented_fingerprint,
    )
