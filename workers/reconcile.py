"""Reconcile one host: read desired state, read the host's actual state over
SSH, apply the difference as one transaction, verify, and report.

Level-triggered and idempotent: running it twice, or again after a crash
half-way, is always safe. At most one reconcile per host runs at a time (a
lease in the database with an expiry, so a killed worker cannot hold a host
for long); many hosts reconcile in parallel.

The worker's half: leases, SSH sessions, reading the host, applying, verifying. What a success or a
failure means for the apps is the domain's bookkeeping (egressportal/core/services/hostsync.py); what the
host must hold is decided by egressportal/core/desired.py. See docs/ARCHITECTURE.md, "The reconcile loop".
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import paramiko
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from egressportal import dataplane as dp
from egressportal.celery import LANE_USER
from egressportal.core.desired import GatewayPlan, NodePlan, gateway_desired, node_desired
from egressportal.core.models import Gateway, Node, host_model
from egressportal.core.secrets import SecretsError, decrypt, load_private_key
from egressportal.core.services.hostsync import (
    host_key_mismatch_record,
    host_pending_apps,
    host_reconcile_failed,
    host_reconcile_succeeded,
)
from egressportal.core.services.reconcile import (
    reconcile_lane_marker_cleared,
    reconcile_lane_started,
    reconcile_rerun_pending,
    reconcile_rerun_request,
    reconcile_rerun_take,
)
from egressportal.ops import logs as ops_logs

from .ssh import CommandFailed, HostKeyMismatch, HostTarget, SSHError, SSHSession, get_session
from .verified import verified_forget, verified_recall, verified_remember

__all__ = ["MAX_RUNS", "ReconcileResult", "HostBusy", "host_reconcile", "host_session", "host_target", "host_read_actual"]

logger = logging.getLogger(__name__)


class HostBusy(Exception):
    """Another worker holds this host's lease. ``rerun``: the holder was asked to run once more for this
    request (the host's rerun flag); else try again shortly."""

    def __init__(self, message: str, *, rerun: bool = False) -> None:
        super().__init__(message)
        self.rerun = rerun


@dataclass
class ReconcileResult:
    host: str
    changed: bool
    summary: str
    duration: float
    settled_apps: int = 0


def _lease_seconds() -> float:
    return settings.EGRESS_LEASE_SECONDS


# When this process took or last renewed each lease it holds (monotonic seconds, by token): a lease
# younger than half its term is ours for certain (nobody takes an unexpired lease), so a renewal then
# costs no query.
_lease_taken: dict[str, float] = {}


def _lease_acquire(model: type[Gateway] | type[Node], pk: int, **also: Any) -> str | None:
    """Take the host's lease; ``also``: other fields of the host's row to write in the same statement."""
    token = secrets.token_hex(16)
    now = timezone.now()
    got = model.objects.filter(pk=pk).filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)).update(
        lease_token=token, lease_expires_at=now + dt.timedelta(seconds=_lease_seconds()), **also
    )
    if not got:
        return None
    _lease_taken[token] = time.monotonic()
    return token


def _lease_renew(model: type[Gateway] | type[Node], pk: int, token: str) -> bool:
    taken = _lease_taken.get(token)
    if taken is not None and time.monotonic() - taken < _lease_seconds() / 2:
        return True
    expires = timezone.now() + dt.timedelta(seconds=_lease_seconds())
    renewed = bool(model.objects.filter(pk=pk, lease_token=token).update(lease_expires_at=expires))
    if renewed:
        _lease_taken[token] = time.monotonic()
    return renewed


def _lease_release(model: type[Gateway] | type[Node], pk: int, token: str) -> None:
    _lease_taken.pop(token, None)
    model.objects.filter(pk=pk, lease_token=token).update(lease_token="", lease_expires_at=None)


def host_target(host: Gateway | Node) -> HostTarget:
    return HostTarget(
        address=host.mgmt_address,
        port=host.ssh_port,
        username=host.ssh_user,
        host_key=host.host_key,
        use_sudo=host.use_sudo,
    )


# Parsed per-host keys by ciphertext: the session pool is keyed by the PKey's identity, so one object
# per stored key keeps one pooled connection per host (a new ciphertext, after a change or a
# rotation, is a new entry).
_host_pkeys: dict[str, paramiko.PKey] = {}


def _host_pkey(host: Gateway | Node) -> paramiko.PKey | None:
    ciphertext = host.ssh_private_key_encrypted
    if not ciphertext:
        return None
    pkey = _host_pkeys.get(ciphertext)
    if pkey is None:
        try:
            pkey = load_private_key(decrypt(ciphertext))
        except (SecretsError, ValueError) as exc:
            # An auth failure the operator can act on; the message never holds the key.
            raise SSHError(f"the SSH private key stored for {host.name} cannot be used: {exc}", kind="auth") from None
        _host_pkeys[ciphertext] = pkey
    return pkey


def host_session(host: Gateway | Node) -> SSHSession:
    """The pooled session to ``host``: its own private key when one is stored, else the workers' key file."""
    pkey = _host_pkey(host)
    credentials: dict[str, Any] = {"pkey": pkey} if pkey is not None else {"key_filename": settings.EGRESS_SSH_KEY_FILE}
    return get_session(
        host_target(host),
        **credentials,
        connect_timeout=settings.EGRESS_SSH_CONNECT_TIMEOUT,
        command_timeout=settings.EGRESS_SSH_COMMAND_TIMEOUT,
    )


def _read_outputs(session: SSHSession, cmds: dict[str, dp.HostRead], *, use_sudo: bool) -> dict[str, tuple[int, str]]:
    """Run the read commands, in ONE round trip when possible: the exec script with no apply step (validated,
    shell-quoted argv, never raw input). With sudo, each command runs on its own so the sudo rules never
    need a shell."""
    if use_sudo:
        results = {}
        for name, read in cmds.items():
            r = session.run(read.argv, stdin=read.stdin, check=False)
            results[name] = (r.exit_status, r.stdout if r.exit_status == 0 else r.stderr)
        return results
    result = session.run(dp.EXEC_ARGV, stdin=dp.render_exec_script([], cmds))
    return dp.exec_results(result.stdout, steps=0)[1]


def _read_commands(host: Gateway | Node) -> dict[str, dp.HostRead]:
    if isinstance(host, Gateway):
        return dp.gateway_read_commands(host.public_interface)
    return dp.node_read_commands()


def _state_from_outputs(
    host: Gateway | Node, cmds: dict[str, dp.HostRead], outputs: dict[str, tuple[int, str]]
) -> dp.GatewayState | dp.NodeState:
    return dp.parse_host_reads(
        cmds, outputs, public_interface=host.public_interface if isinstance(host, Gateway) else None
    )


def host_read_actual(session: SSHSession, host: Gateway | Node) -> dp.GatewayState | dp.NodeState:
    """The product's state on the host as the host reports it."""
    cmds = _read_commands(host)
    return _state_from_outputs(host, cmds, _read_outputs(session, cmds, use_sudo=host.use_sudo))


def _apply(session: SSHSession, plan: dp.Plan) -> None:
    # One command per step (the sudo path): the sudo rules allow no shell, so no gratuitous ARP (the
    # announcement is never one of the plan's steps).
    for argv, stdin in plan.steps():
        session.run(argv, stdin=stdin)


def _apply_and_read(
    session: SSHSession, host: Gateway | Node, change: dp.Plan
) -> tuple[CommandFailed | None, dp.GatewayState | dp.NodeState]:
    """Apply ``change`` (its steps in order, stopping at the first that fails) and read the host back, in
    ONE remote exec. Returns the failed step (None when every step succeeded) and the state read back,
    which is read whatever happened. With sudo, one exec per command (sudo rules never need a shell)."""
    cmds = _read_commands(host)
    if host.use_sudo:
        failure = None
        try:
            _apply(session, change)
        except CommandFailed as exc:
            failure = exc
        return failure, host_read_actual(session, host)
    steps = change.steps()
    # The announcement (gratuitous ARP, unsolicited NA) starts after the read-back, in the background.
    result = session.run(dp.EXEC_ARGV, stdin=dp.render_exec_script(steps, cmds, announce=change.announce))
    applied, reads = dp.exec_results(result.stdout, steps=len(steps))
    failure = next((CommandFailed(steps[i][0], status, text) for i, status, text in applied if status != 0), None)
    return failure, _state_from_outputs(host, cmds, reads)


# How many times one task reconciles a host back to back when asked again meanwhile (the rerun flag);
# a host asked without pause beyond that is left to the next task, so one task never runs for ever.
MAX_RUNS = 4


def host_reconcile(*, kind: str, pk: int, lane: str = LANE_USER) -> ReconcileResult | None:
    """Bring one host to its desired state. Returns None when the host is gone
    or disabled; raises HostBusy when another worker holds it, SSHError or
    DataplaneValueError on failure (after recording it for users to see).
    ``lane``: which lane's message this is (its coalescing marker is cleared).

    A user-lane request that finds the host held raises the host's rerun flag before HostBusy: the
    holder runs once more, at once, so the request waits for one reconcile instead of a retry. The
    holder takes the flag before each run and looks at it once the lease is released."""
    model = host_model(kind)
    # From here on, a new request of this lane must enqueue a new task: this one may already have read
    # the state it will apply. The user lane's marker is a field of the host's row: cleared with the
    # lease taken, in one statement (or alone when the lease is held).
    marker = reconcile_lane_marker_cleared(lane=lane)
    if not marker:
        reconcile_lane_started(kind=kind, pk=pk, lane=lane)
    result: ReconcileResult | None = None
    runs = 0
    while True:
        token = _lease_acquire(model, pk, **(marker if not runs else {}))
        if token is None:
            if marker and not runs:
                reconcile_lane_started(kind=kind, pk=pk, lane=lane)
            if runs:
                return result  # another worker took the host after us: it reads newer state than any request
            if not model.objects.filter(pk=pk).exists():
                return None
            raise HostBusy(
                f"{kind} {pk} is being reconciled by another worker",
                rerun=lane == LANE_USER and reconcile_rerun_request(kind=kind, pk=pk),
            )
        try:
            # Taken before the run reads anything: a request from now on raises it again.
            reconcile_rerun_take(kind=kind, pk=pk)
            host = model.objects.select_related("region").get(pk=pk)
            if not host.enabled:
                return None
            with ops_logs.log_context(host=host.name):
                result = _reconcile(host, model, token)
            runs += 1
        finally:
            _lease_release(model, pk, token)
        # A request while it ran found the lease held and raised the flag: run for it.
        if runs >= MAX_RUNS or not reconcile_rerun_pending(kind=kind, pk=pk):
            return result


def _reconcile(host: Gateway | Node, model: type[Gateway] | type[Node], token: str) -> ReconcileResult:
    started = time.monotonic()
    plan: GatewayPlan | NodePlan | None = None
    try:
        # Hostile or broken values in the database fail here, before any connection.
        plan = gateway_desired(host) if isinstance(host, Gateway) else node_desired(host)
        session = host_session(host)
        if isinstance(plan, GatewayPlan) and plan.decommission:
            verified_forget(host)
            change = _decommission_gateway(session, host, host_read_actual(session, host))
            return _finish(host, plan, change, started)
        change = _converge(session, host, model, token, plan.state)
    except HostKeyMismatch as exc:
        verified_forget(host)
        _record_key_mismatch(host, exc, plan.apps if plan else host_pending_apps(host))
        raise
    except (SSHError, dp.DataplaneValueError, OSError) as exc:
        verified_forget(host)
        _record_failure(host, exc, plan.apps if plan else host_pending_apps(host), time.monotonic() - started)
        raise
    except BaseException:
        verified_forget(host)
        raise
    verified_remember(host, plan.state)
    return _finish(host, plan, change, started)


def _plan(host: Gateway | Node, actual: Any, desired: Any, *, incremental: bool = False) -> dp.Plan:
    if isinstance(host, Gateway):
        return dp.plan_gateway(actual, desired, incremental=incremental)
    return dp.plan_node(actual, desired, incremental=incremental)


def _converge(
    session: SSHSession,
    host: Gateway | Node,
    model: type[Gateway] | type[Node],
    token: str,
    desired: dp.GatewayState | dp.NodeState,
) -> dp.Plan:
    """Bring the host to ``desired`` and verify it; returns what was changed.

    Starts from the state verified last time (workers/verified.py), so the steady state is one remote exec
    that applies the difference and reads back (an unchanged host: just the read-back). When the host
    reports anything else than ``desired`` (it drifted since, or the step failed because of it), plan again
    from what it reported and apply once more. Without a verified state, read first (two execs)."""
    known = verified_recall(host)
    actual = known if known is not None else host_read_actual(session, host)
    # From a verified state the tables are what the renderer wrote: only their elements change. A host read
    # (first contact, or the repair below) is written whole: a broken rule parses as an empty table.
    change = _plan(host, actual, desired, incremental=known is not None)
    if known is None and change.is_empty:
        return change  # just read: nothing to verify
    if not change.is_empty and not _lease_renew(model, host.pk, token):
        raise HostBusy(f"lost the lease on {host.name}")
    failure, after = _apply_and_read(session, host, change)
    if failure is None and after == desired:
        return change
    if known is None:
        # The host was read just before: a failure is the host's answer, not stale knowledge.
        if failure is not None:
            raise failure
        raise dp.DataplaneValueError(f"host does not hold the applied state: {_plan(host, after, desired).summary()}")
    logger.info(
        "%s: not in the state verified last time (%s); planning from what it reports",
        host.name,
        f"step failed: {failure}" if failure is not None else "it drifted",
    )
    repair = _plan(host, after, desired)
    if not _lease_renew(model, host.pk, token):
        raise HostBusy(f"lost the lease on {host.name}")
    failure, after = _apply_and_read(session, host, repair)
    if failure is not None:
        raise failure
    if after != desired:
        raise dp.DataplaneValueError(f"host does not hold the applied state: {_plan(host, after, desired).summary()}")
    changes = tuple(dict.fromkeys((*change.changes, *repair.changes, "repaired drift")))
    return replace(repair, changes=changes)


def _finish(host: Gateway | Node, plan: GatewayPlan | NodePlan, change: dp.Plan, started: float) -> ReconcileResult:
    duration = time.monotonic() - started
    settled = host_reconcile_succeeded(
        host=host,
        plan=plan,
        changed=not change.is_empty,
        summary=change.summary(),
        changes=change.changes,
        duration=duration,
    )
    return ReconcileResult(
        host=host.name, changed=not change.is_empty, summary=change.summary(), duration=duration, settled_apps=settled
    )


def _decommission_gateway(session: SSHSession, host: Gateway, actual: dp.GatewayState) -> dp.Plan:
    """A drained gateway that holds no address keeps nothing of ours: no
    table, no addresses, no routes. It is ready for maintenance or removal;
    undraining brings everything back on the next reconcile."""
    exists = session.run(dp.table_exists_command(), check=False).exit_status == 0
    exists6 = session.run(dp.table_exists_command(6), check=False).exit_status == 0
    change = dp.plan_gateway_decommission(actual, table_exists=exists, table6_exists=exists6)
    if change.is_empty:
        return change
    _apply(session, change)
    after = host_read_actual(session, host)
    if after != dp.GatewayState.build(public_interface=host.public_interface):
        raise dp.DataplaneValueError("the drained gateway still holds product state after removal")
    return change


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text[:500]


def _record_failure(host: Gateway | Node, exc: BaseException, app_ids: set[int], duration: float) -> None:
    host_reconcile_failed(
        host=host,
        reason=_reason(exc),
        app_ids=app_ids,
        duration=duration,
        ssh_error_kind=exc.kind if isinstance(exc, SSHError) else None,
    )


def _record_key_mismatch(host: Gateway | Node, exc: HostKeyMismatch, app_ids: set[int]) -> None:
    host_key_mismatch_record(
        host=host,
        app_ids=app_ids,
        presented_key=exc.actual_key or "",
        expected_fingerprint=exc.expected,
        presented_fingerprint=str(exc.actual),  # None (a key of another type) reads "None", as before
    )
