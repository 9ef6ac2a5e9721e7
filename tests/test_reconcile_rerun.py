"""A reconcile request that finds its host held by another worker (workers/reconcile.py host_reconcile,
core/services/reconcile.py rerun flag): the holder runs once more at once, instead of the request
retrying some hundreds of milliseconds later. The host's work (SSH, nft) is a stand-in here: what is
tested is the lease and flag protocol, on the real database; tests/integration/test_lanes.py runs a
toggle through a real worker."""

from __future__ import annotations

import pytest

from egressportal.celery import LANE_SWEEP, LANE_USER
from egressportal.core.models import Gateway
from egressportal.core.services import reconcile as r
from workers import reconcile as wr
from workers import tasks

pytestmark = pytest.mark.django_db


class FakeRedis:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    def set(self, key, value, nx=False, ex=None):
        if nx and key in self.keys:
            return None
        self.keys[key] = value
        return True

    def getdel(self, key):
        return self.keys.pop(key, None)

    def exists(self, key):
        return int(key in self.keys)

    def delete(self, *keys):
        for k in keys:
            self.keys.pop(k, None)


class DownRedis(FakeRedis):
    def set(self, *a, **k):
        raise ConnectionError("redis down")

    getdel = exists = set


@pytest.fixture
def flags(monkeypatch):
    fake = FakeRedis()
    monkeypatch.setattr(r, "redis_client", lambda *a, **k: fake)
    return fake


@pytest.fixture
def runs(monkeypatch):
    """The host's work replaced by a recorder; ``during`` runs inside the n-th run (1-based)."""
    calls: list[int] = []
    during: dict[int, object] = {}

    def fake(host, model, token):
        calls.append(host.pk)
        hook = during.get(len(calls))
        if hook is not None:
            hook()
        return wr.ReconcileResult(host=host.name, changed=False, summary="no changes", duration=0.0)

    monkeypatch.setattr(wr, "_reconcile", fake)
    return calls, during


def _request_while_held(kind: str, pk: int, *, lane: str = LANE_USER) -> wr.HostBusy:
    with pytest.raises(wr.HostBusy) as busy:
        wr.host_reconcile(kind=kind, pk=pk, lane=lane)
    return busy.value


def test_a_request_while_the_host_runs_makes_the_holder_run_again_at_once(flags, runs, make_gateway):
    gw = make_gateway()
    calls, during = runs
    seen: list[wr.HostBusy] = []
    during[1] = lambda: seen.append(_request_while_held("gateway", gw.pk))
    assert wr.host_reconcile(kind="gateway", pk=gw.pk) is not None
    assert seen[0].rerun
    assert calls == [gw.pk, gw.pk]  # the second run is the request's
    assert not flags.keys  # taken
    assert Gateway.objects.get(pk=gw.pk).lease_token == ""


def test_no_request_no_rerun(flags, runs, make_gateway):
    gw = make_gateway()
    calls, _ = runs
    wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert calls == [gw.pk]


def test_a_request_just_before_the_release_is_run_after_it(flags, runs, make_gateway, monkeypatch):
    """The window between the holder's last look at the flag and its release: the request still finds
    the lease held; the holder looks again once released and runs for it."""
    gw = make_gateway()
    calls, _ = runs
    release = wr._lease_release
    seen: list[wr.HostBusy] = []

    def release_late(model, pk, token):
        if len(seen) == 0:
            seen.append(_request_while_held("gateway", pk))
        release(model, pk, token)

    monkeypatch.setattr(wr, "_lease_release", release_late)
    wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert seen[0].rerun
    assert calls == [gw.pk, gw.pk]


def test_a_host_asked_without_pause_is_run_at_most_max_runs_times(flags, runs, make_gateway):
    gw = make_gateway()
    calls, during = runs
    for n in range(1, wr.MAX_RUNS + 3):
        during[n] = lambda: _request_while_held("gateway", gw.pk)
    wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert len(calls) == wr.MAX_RUNS
    assert flags.keys  # the last request is left for its own task's late retry


def test_a_sweep_request_raises_no_flag(flags, runs, make_gateway):
    gw = make_gateway()
    calls, during = runs
    seen: list[wr.HostBusy] = []
    during[1] = lambda: seen.append(_request_while_held("gateway", gw.pk, lane=LANE_SWEEP))
    wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert not seen[0].rerun
    assert calls == [gw.pk]


def test_without_redis_the_request_retries_by_itself(monkeypatch, runs, make_gateway):
    monkeypatch.setattr(r, "redis_client", lambda *a, **k: DownRedis())
    gw = make_gateway()
    calls, during = runs
    seen: list[wr.HostBusy] = []
    during[1] = lambda: seen.append(_request_while_held("gateway", gw.pk))
    wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert not seen[0].rerun  # no flag could be raised: the task's quick retry is the way
    assert calls == [gw.pk]


class _Retry(Exception):
    def __init__(self, **kw) -> None:
        self.kw = kw


@pytest.fixture
def task(monkeypatch):
    """The Celery task's body with ``self.retry`` recorded (the broker's part is tested with a worker)."""
    monkeypatch.setattr(tasks.reconcile_host, "retry", lambda **kw: _Retry(**kw))
    return tasks.reconcile_host


def test_the_task_of_a_request_the_holder_reruns_for_only_keeps_a_late_retry(flags, task, make_gateway, settings):
    gw = make_gateway()
    Gateway.objects.filter(pk=gw.pk).update(lease_token="held", lease_expires_at=wr.timezone.now() + wr.dt.timedelta(seconds=60))
    with pytest.raises(_Retry) as retry:
        task.run("gateway", gw.pk)
    # Not a quick retry: the holder does the work; only if it died is the flag still up after the lease.
    assert retry.value.kw["countdown"] >= settings.EGRESS_LEASE_SECONDS
    assert retry.value.kw["kwargs"] == {"lane": LANE_USER, "only_if_asked": True}
    assert flags.keys


def test_a_late_retry_does_nothing_when_the_holder_took_the_flag(flags, runs, task, make_gateway):
    gw = make_gateway()
    calls, _ = runs
    assert task.run("gateway", gw.pk, only_if_asked=True) is None
    assert calls == []
    r.reconcile_rerun_request(kind="gateway", pk=gw.pk)  # the holder died: the flag is still up
    assert task.run("gateway", gw.pk, only_if_asked=True) is not None
    assert calls == [gw.pk]


def test_a_sweep_task_that_finds_the_host_held_is_done(flags, task, make_gateway):
    gw = make_gateway()
    Gateway.objects.filter(pk=gw.pk).update(lease_token="held", lease_expires_at=wr.timezone.now() + wr.dt.timedelta(seconds=60))
    assert task.run("gateway", gw.pk, lane=LANE_SWEEP) is None
    assert not flags.keys


def test_the_user_lane_marker_is_cleared_with_the_lease_in_one_statement_or_alone_when_busy(
    flags, runs, make_gateway, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    gw = make_gateway()
    now = wr.timezone.now()
    Gateway.objects.filter(pk=gw.pk).update(reconcile_queued_at=now)
    with CaptureQueriesContext(connection) as ctx:
        wr.host_reconcile(kind="gateway", pk=gw.pk)
    assert Gateway.objects.get(pk=gw.pk).reconcile_queued_at is None
    updates = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("UPDATE")]
    assert "reconcile_queued_at" in updates[0] and "lease_token" in updates[0], updates[0]
    # Busy: the marker is cleared all the same (a new request must send a new message).
    Gateway.objects.filter(pk=gw.pk).update(reconcile_queued_at=now, lease_token="held",
                                            lease_expires_at=now + wr.dt.timedelta(seconds=60))
    _request_while_held("gateway", gw.pk)
    assert Gateway.objects.get(pk=gw.pk).reconcile_queued_at is None
    # The sweep lane leaves the user lane's marker alone.
    Gateway.objects.filter(pk=gw.pk).update(reconcile_queued_at=now, lease_token="", lease_expires_at=None)
    wr.host_reconcile(kind="gateway", pk=gw.pk, lane=LANE_SWEEP)
    assert Gateway.objects.get(pk=gw.pk).reconcile_queued_at == now


def test_a_fresh_lease_is_renewed_without_a_query_an_old_one_with_one(make_gateway, monkeypatch, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    gw = make_gateway()
    clock = [1000.0]
    monkeypatch.setattr(wr.time, "monotonic", lambda: clock[0])
    token = wr._lease_acquire(Gateway, gw.pk)
    with CaptureQueriesContext(connection) as ctx:
        assert wr._lease_renew(Gateway, gw.pk, token)
    assert len(ctx.captured_queries) == 0
    clock[0] += settings.EGRESS_LEASE_SECONDS / 2 + 0.1
    with CaptureQueriesContext(connection) as ctx:
        assert wr._lease_renew(Gateway, gw.pk, token)
    assert len(ctx.captured_queries) == 1
    Gateway.objects.filter(pk=gw.pk).update(lease_token="someone-else")  # lost it (expired and taken)
    clock[0] += settings.EGRESS_LEASE_SECONDS / 2 + 0.1
    assert not wr._lease_renew(Gateway, gw.pk, token)
    wr._lease_release(Gateway, gw.pk, token)
    assert token not in wr._lease_taken
