"""Worker-side observations for /metrics: reconcile outcomes and durations, SSH errors, toggle-to-assigned
latency, gateway failovers, recorded in Redis (see store.py for why) and rendered by metrics.py.

The hooks are one-line calls from the services and the workers; each defers to the commit of the
surrounding transaction (a rolled-back reconcile measured nothing) and never raises. Plain values in,
nothing of the domain imported: the domain calls these, never the other way round.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from .store import MetricSpec, metric_store

__all__ = [
    "GATEWAY_FAILOVERS",
    "RECONCILES",
    "RECONCILE_DURATION",
    "SSH_ERRORS",
    "TOGGLE_LATENCY",
    "WORKER_METRICS",
    "gateway_failed_over",
    "reconcile_busy",
    "reconcile_failed",
    "reconcile_succeeded",
    "ssh_error",
    "toggle_assigned",
]

logger = logging.getLogger(__name__)

RECONCILES = MetricSpec(
    "egress_reconciles",
    "counter",
    "Reconciles of one host by outcome: success, failure (SSH, dataplane or host key), busy (another worker held the host).",
    ("kind", "host", "outcome"),
)
# Per kind, not per host: a histogram per host multiplies the bucket series by
# the number of nodes; per-host timings are in egress_host_last_reconcile_duration_seconds.
RECONCILE_DURATION = MetricSpec(
    "egress_reconcile_duration_seconds",
    "histogram",
    "Duration of host reconciles (read, plan, apply, verify), by host kind and outcome.",
    ("kind", "outcome"),
    (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)
SSH_ERRORS = MetricSpec(
    "egress_ssh_errors",
    "counter",
    "SSH errors by kind (unreachable, auth, host_key_mismatch, timeout, command_failed, protocol) and operation.",
    ("kind", "operation"),
)
TOGGLE_LATENCY = MetricSpec(
    "egress_toggle_to_assigned_seconds",
    "histogram",
    "Time from an enable request to the app's egress being assigned (API, broker, worker, SSH, nft).",
    (),
    (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
GATEWAY_FAILOVERS = MetricSpec(
    "egress_gateway_failovers",
    "counter",
    "Gateways turning unhealthy: their apps' traffic fails over to the standby gateway.",
    ("gateway",),
)
WORKER_METRICS = (RECONCILES, RECONCILE_DURATION, SSH_ERRORS, TOGGLE_LATENCY, GATEWAY_FAILOVERS)


# -- hooks (called by the services and the tasks) --------------------------------------------------


def _after_commit(func: Any) -> None:
    def run() -> None:
        try:
            func()
        except Exception:
            logger.debug("recording a metric failed", exc_info=True)

    try:
        # Outside a transaction, record now: asking on_commit would open a
        # database connection (in a probe thread, one that is never closed).
        if transaction.get_connection().in_atomic_block:
            transaction.on_commit(run)
        else:
            run()
    except Exception:
        logger.debug("scheduling a metric failed", exc_info=True)


def reconcile_succeeded(*, host: Any, duration: float) -> None:
    kind, name = host.kind, host.name
    _after_commit(lambda: _reconciled(kind, name, "success", duration))


def reconcile_failed(*, host: Any, ssh_error_kind: str | None, duration: float | None = None) -> None:
    """``ssh_error_kind``: the SSH error's kind when SSH failed (else None: a dataplane or OS error)."""
    kind, name = host.kind, host.name
    _after_commit(lambda: _reconciled(kind, name, "failure", duration))
    if ssh_error_kind is not None:
        ssh_error(ssh_error_kind, operation="reconcile")


def reconcile_busy(*, kind: str, name: str) -> None:
    _after_commit(lambda: metric_store.inc(RECONCILES, (kind, name, "busy")))


def _reconciled(kind: str, name: str, outcome: str, duration: float | None) -> None:
    metric_store.inc(RECONCILES, (kind, name, outcome))
    if duration is not None:
        metric_store.observe(RECONCILE_DURATION, (kind, outcome), duration)


def ssh_error(kind: str, *, operation: str) -> None:
    """Counts SSH errors by kind (workers/ssh.py SSHError.kind); dataplane and OS errors are reconcile
    failures, not SSH's, and are not passed here."""
    kind = kind or "protocol"
    _after_commit(lambda: metric_store.inc(SSH_ERRORS, (kind, operation)))


def toggle_assigned(latency: float | None) -> None:
    if latency is not None and latency >= 0:
        _after_commit(lambda: metric_store.observe(TOGGLE_LATENCY, (), latency))


def gateway_failed_over(*, gateway: Any) -> None:
    """A gateway turned unhealthy: its apps' traffic fails over to their standby gateways."""
    name = gateway.name
    _after_commit(lambda: metric_store.inc(GATEWAY_FAILOVERS, (name,)))
