"""Asking the workers to reconcile hosts, with coalescing, in two lanes, and recording which hosts owe
which apps a reconcile (``host_syncs_renew``).

User lane (writes, a host's success asking for the next hosts, health changes, the admin): a host has
at most one such message waiting in the broker; a request while one waits is absorbed by it (the
waiting task reads the newest desired state when it starts). 1,000 toggles in a burst thus become a
handful of transactions per host. The marker (``reconcile_queued_at``) is cleared when the task
starts; a marker older than EGRESS_COALESCE_STALE_SECONDS is ignored, so a message lost with Redis
never blocks a host for long (the sweep also re-requests).

Sweep lane (the periodic sweep, workers/sweep.py): its messages go to the sweep queue at the lowest
priority, which workers serve only when the user lane is empty. A sweep request is absorbed by any
message waiting for the host (a user one does the same work sooner); a user request is NEVER absorbed
by a waiting sweep message (it would wait behind the whole sweep): only user-lane messages set the
database marker. The sweep lane's own marker is a Redis key with the same expiry, so two sweeps do not
stack messages for a host; it is cleared when the sweep task starts.

A request that finds the host being reconciled (its lease held by another worker) does not wait to try
again: it raises the host's rerun flag (``reconcile_rerun_request``, a Redis key) and the worker holding
the lease runs the reconcile once more, at once, before it lets the host go
(``reconcile_rerun_take``). A toggle's node, asked by both of the app's gateways one right after the
other, is thus reconciled twice back to back instead of a retry some hundreds of milliseconds later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ...celery import LANE_SWEEP, LANE_USER, RECONCILE_QUEUE, RECONCILE_TASK, SWEEP_PRIORITY, SWEEP_QUEUE
from ...celery import app as celery_app
from ...ops.store import redis_client
from ..models import Gateway, HostSync, Node, host_model

__all__ = [
    "RECONCILE_TASK",
    "host_syncs_renew",
    "reconcile_dispatch",
    "reconcile_lane_marker_cleared",
    "reconcile_lane_started",
    "reconcile_mark_queued",
    "reconcile_request",
    "reconcile_rerun_pending",
    "reconcile_rerun_request",
    "reconcile_rerun_take",
    "reconcile_retry_expected",
    "reconcile_sweep_dispatch",
]

logger = logging.getLogger(__name__)

def _stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.EGRESS_COALESCE_STALE_SECONDS)


def reconcile_request(*, gateways: Iterable[Gateway | int] = (), nodes: Iterable[Node | int] = ()) -> None:
    """Reconcile these hosts once the current transaction commits (never before:
    a worker must find the data it is asked to apply)."""
    targets = [(Gateway.kind, getattr(g, "pk", g)) for g in gateways]
    targets += [(Node.kind, getattr(n, "pk", n)) for n in nodes]
    if not targets:
        return
    transaction.on_commit(lambda: reconcile_dispatch(targets))


# Fail fast when the broker is down: a user's request must not hang on retries, and the sweep re-sends
# whatever the database says is owed.
_SEND_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1, "interval_max": 0.1}


def reconcile_dispatch(targets: Iterable[tuple[str, int]], *, force: bool = False) -> int:
    """Send user-lane reconcile messages now (absorbed only by a waiting user-lane message; ``force``:
    always send); returns how many were sent."""
    mode = settings.EGRESS_RECONCILE_DISPATCH
    if mode == "none":
        return 0
    sent = 0
    now = timezone.now()
    for kind, pk in dict.fromkeys(targets):
        model = host_model(kind)
        claim = model.objects.filter(pk=pk)
        if not force:
            claim = claim.filter(Q(reconcile_queued_at__isnull=True) | Q(reconcile_queued_at__lt=now - _stale_after()))
        if not claim.update(reconcile_queued_at=now):
            continue  # a waiting user-lane message will pick this change up
        try:
            celery_app.send_task(
                RECONCILE_TASK, args=[kind, pk], queue=RECONCILE_QUEUE, retry=True, retry_policy=_SEND_RETRY
            )
            sent += 1
        except Exception as exc:  # broker down: the sweep will re-request
            model.objects.filter(pk=pk).update(reconcile_queued_at=None)
            logger.warning("could not enqueue reconcile of %s %s: %s", kind, pk, exc)
    return sent


def _sweep_marker(kind: str, pk: int) -> str:
    return f"egress:sweep-queued:{kind}:{pk}"


def reconcile_sweep_dispatch(targets: Iterable[tuple[str, int]]) -> int:
    """Send sweep-lane reconcile messages (lowest priority) for the hosts that have no message waiting in
    either lane; returns how many were sent."""
    if settings.EGRESS_RECONCILE_DISPATCH == "none":
        return 0
    targets = list(dict.fromkeys(targets))
    now = timezone.now()
    # A user-lane message waits for these: it does the sweep's work, sooner.
    waiting = {
        (model.kind, pk)
        for model in (Gateway, Node)
        for pk in model.objects.filter(
            pk__in=[pk for kind, pk in targets if kind == model.kind], reconcile_queued_at__gte=now - _stale_after()
        ).values_list("pk", flat=True)
    }
    client = redis_client(settings.REDIS_URL, timeout=1.0)
    expiry = max(1, round(settings.EGRESS_COALESCE_STALE_SECONDS))
    sent = 0
    for kind, pk in targets:
        if (kind, pk) in waiting:
            continue
        marker = _sweep_marker(kind, pk)
        try:
            if not client.set(marker, "1", nx=True, ex=expiry):
                continue  # a sweep message still waits for this host
            celery_app.send_task(
                RECONCILE_TASK,
                args=[kind, pk],
                kwargs={"lane": LANE_SWEEP},
                queue=SWEEP_QUEUE,
                priority=SWEEP_PRIORITY,
                retry=True,
                retry_policy=_SEND_RETRY,
            )
            sent += 1
        except Exception as exc:  # broker down: the next sweep tries again
            with contextlib.suppress(Exception):
                client.delete(marker)
            logger.warning("could not enqueue the sweep's reconcile of %s %s: %s", kind, pk, exc)
    return sent


def reconcile_lane_marker_cleared(*, lane: str) -> dict[str, None]:
    """The host-row fields that ``reconcile_lane_started`` clears for ``lane`` ({} for the sweep lane, whose
    marker is in Redis), for a worker that writes them with its lease in one statement."""
    return {"reconcile_queued_at": None} if lane == LANE_USER else {}


def reconcile_lane_started(*, kind: str, pk: int, lane: str) -> None:
    """A reconcile task of ``lane`` starts: from here on, a new request of that lane must send a new
    message (this task may already have read the state it will apply). A sweep task leaves the user
    lane's marker alone: a user message still waiting will run after it anyway."""
    if lane == LANE_USER:
        host_model(kind).objects.filter(pk=pk).update(reconcile_queued_at=None)
        return
    try:
        redis_client(settings.REDIS_URL, timeout=1.0).delete(_sweep_marker(kind, pk))
    except Exception as exc:  # the marker expires on its own
        logger.info("cannot clear the sweep marker of %s %s: %s", kind, pk, exc)


def _rerun_key(kind: str, pk: int) -> str:
    return f"egress:rerun:{kind}:{pk}"


def reconcile_rerun_request(*, kind: str, pk: int) -> bool:
    """A reconcile of this host was asked for while another worker holds it: that worker runs once more
    before it lets the host go. False when the flag could not be raised (Redis down): then the caller
    must try again itself."""
    try:
        # Expires on its own: a flag nobody takes (the holder was killed) must not live forever; the
        # caller's own late retry covers that case.
        redis_client(settings.REDIS_URL, timeout=1.0).set(
            _rerun_key(kind, pk), "1", ex=max(1, round(settings.EGRESS_LEASE_SECONDS * 2))
        )
    except Exception as exc:
        logger.info("cannot ask for a rerun of %s %s: %s", kind, pk, exc)
        return False
    return True


def reconcile_rerun_take(*, kind: str, pk: int) -> bool:
    """Take (clear) the host's rerun flag; True when it was raised. The holder of the host's lease takes
    it before each run (a request from then on is seen by the next take) and after it."""
    try:
        return redis_client(settings.REDIS_URL, timeout=1.0).getdel(_rerun_key(kind, pk)) is not None
    except Exception as exc:  # Redis down: no rerun; the requester's own retry covers it
        logger.info("cannot read the rerun flag of %s %s: %s", kind, pk, exc)
        return False


def reconcile_rerun_pending(*, kind: str, pk: int) -> bool:
    """Whether the host's rerun flag is raised (nobody has taken it yet)."""
    try:
        return bool(redis_client(settings.REDIS_URL, timeout=1.0).exists(_rerun_key(kind, pk)))
    except Exception:  # Redis down: nobody could raise it either (requesters then retry themselves)
        return False


def reconcile_retry_expected(*, kind: str, pk: int, retry_in: float) -> None:
    """No retry task is queued any more (the task gave up): the next attempt is the periodic sweep's."""
    host_model(kind).objects.filter(pk=pk).update(reconcile_retry_at=timezone.now() + dt.timedelta(seconds=retry_in))


def reconcile_mark_queued(*, kind: str, pk: int, retry_in: float | None = None) -> None:
    """A retry of this host's reconcile is scheduled (in ``retry_in`` seconds): requests meanwhile are
    absorbed by it, and the apps waiting for the host can say when the next attempt is."""
    now = timezone.now()
    retry_at = now + dt.timedelta(seconds=retry_in) if retry_in is not None else None
    host_model(kind).objects.filter(pk=pk).update(reconcile_queued_at=now, reconcile_retry_at=retry_at)


def host_syncs_renew(syncs: Sequence[HostSync]) -> None:
    """Record that these hosts owe these apps a reconcile towards the state being written now.

    A row the host already owes is replaced by a new one (a new id), never reused: a reconcile in flight
    read its pending rows before the desired state (core/desired.py) and settles exactly the ids it read,
    so it must not settle a request it did not see. Reusing the row let a node that had just stopped
    steering a disabled app settle the app's re-enable, which then went "assigned" with nothing steered."""
    by_gateway: dict[int, set[int]] = defaultdict(set)
    by_node: dict[int, set[int]] = defaultdict(set)
    for sync in syncs:
        if sync.gateway_id is not None:
            by_gateway[sync.gateway_id].add(sync.app_id)
        else:
            by_node[sync.node_id].add(sync.app_id)
    owed = Q()
    for gateway_id, app_ids in by_gateway.items():
        owed |= Q(gateway_id=gateway_id, app_id__in=app_ids)
    for node_id, app_ids in by_node.items():
        owed |= Q(node_id=node_id, app_id__in=app_ids)
    if not owed:
        return
    HostSync.objects.filter(owed).delete()
    # A row another transaction inserted meanwhile is as new as ours.
    HostSync.objects.bulk_create(syncs, ignore_conflicts=True, batch_size=1000)
