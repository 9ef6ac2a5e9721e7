"""Reconcile one host: read desired state, read the host's actual state over
SSH, apply the difference as one transaction, verify, and report.

Level-triggered and idempotent: running it twice, or again after a crash
half-way, is always safe. At most one reconcile per host runs at a time (a
lease in the database with an expiry, so a killed worker cannot hold a host
for long); many hosts reconcile in parallel.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import shlex
import time
from dataclasses import dataclass
from typing import Any

import paramiko
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from workers import dataplane as dp
from workers.ssh import HostKeyMismatch, HostTarget, SSHError, SSHSession, get_session

from ...ops import logs as ops_logs
from ...ops import metrics as ops_metrics
from ..desired import gateway_desired, node_desired
from ..models import (
    App,
    EgressIP,
    EgressIPRole,
    EgressStatus,
    EgressType,
    EventLevel,
    Gateway,
    HealthStatus,
    HostSync,
    Node,
)
from ..secrets import SecretsError, decrypt, load_private_key
from .events import WORKER, event_record
from .network import egress_ips_release
from .reconcile import reconcile_request

__all__ = ["ReconcileResult", "HostBusy", "host_reconcile", "host_session", "host_read_actual", "app_settle"]

logger = logging.getLogger(__name__)


class HostBusy(Exception):
    """Another worker holds this host's lease; try again shortly."""


@dataclass
class ReconcileResult:
    host: str
    changed: bool
    summary: str
    duration: float
    settled_apps: int = 0


def _model(kind: str) -> type[Gateway] | type[Node]:
    if kind == "gateway":
        return Gateway
    if kind == "node":
        return Node
    raise ValueError(f"unknown host kind {kind!r}")


def _lease_seconds() -> float:
    return float(getattr(settings, "EGRESS_LEASE_SECONDS", 20))


def _lease_acquire(model: type[Gateway] | type[Node], pk: int) -> str | None:
    token = secrets.token_hex(16)
    now = timezone.now()
    got = model.objects.filter(pk=pk).filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)).update(
        lease_token=token, lease_expires_at=now + dt.timedelta(seconds=_lease_seconds())
    )
    return token if got else None


def _lease_renew(model: type[Gateway] | type[Node], pk: int, token: str) -> bool:
    expires = timezone.now() + dt.timedelta(seconds=_lease_seconds())
    return bool(model.objects.filter(pk=pk, lease_token=token).update(lease_expires_at=expires))


def _lease_release(model: type[Gateway] | type[Node], pk: int, token: str) -> None:
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


# Between the outputs of the read commands run in one exec: a byte no
# nft/ip JSON output contains, then the command's exit status.
_READ_SEPARATOR = "\x1e"


def _read_outputs(session: SSHSession, cmds: dict[str, list[str]], *, use_sudo: bool) -> dict[str, tuple[int, str]]:
    """Run the read commands, in ONE round trip when possible: a fixed shell
    script made of shlex-quoted, validated argv (never raw input). With sudo,
    each command runs on its own so the sudo rules never need a shell."""
    if use_sudo:
        results = {}
        for name, argv in cmds.items():
            r = session.run(argv, check=False)
            results[name] = (r.exit_status, r.stdout if r.exit_status == 0 else r.stderr)
        return results
    script = "; ".join(f"{shlex.join(argv)} 2>&1; printf '\\n{_READ_SEPARATOR}%s\\n' $?" for argv in cmds.values())
    result = session.run(["sh", "-c", script])
    parts = result.stdout.split(f"\n{_READ_SEPARATOR}")
    if len(parts) != len(cmds) + 1:
        raise dp.DataplaneParseError("the host's answer to the state read is garbled")
    outputs: dict[str, tuple[int, str]] = {}
    for index, name in enumerate(cmds):
        body = parts[index] if index == 0 else parts[index].split("\n", 1)[1] if "\n" in parts[index] else ""
        status_line = parts[index + 1].split("\n", 1)[0]
        try:
            status = int(status_line.strip())
        except ValueError:
            raise dp.DataplaneParseError("the host's answer to the state read is garbled") from None
        outputs[name] = (status, body)
    return outputs


def host_read_actual(session: SSHSession, host: Gateway | Node) -> dp.GatewayState | dp.NodeState:
    """The product's state on the host as the host reports it."""
    if isinstance(host, Gateway):
        cmds = dp.gateway_read_commands(host.public_interface)
    else:
        cmds = dp.node_read_commands()
    out: dict[str, str | None] = {}
    for name, (status, text) in _read_outputs(session, cmds, use_sudo=host.use_sudo).items():
        if status == 0:
            out[name] = text
        elif name == "nft" and dp.is_missing_table_error(text):
            out[name] = None
        else:
            raise dp.DataplaneParseError(f"{' '.join(cmds[name][:3])} failed: {text.strip()[:300]}")
    if isinstance(host, Gateway):
        return dp.parse_gateway(out["nft"], out["addr"] or "[]", out["routes"] or "[]", host.public_interface)
    return dp.parse_node(out["nft"], out["rules"] or "[]", out["routes"] or "[]")


def _apply(session: SSHSession, plan: dp.Plan) -> None:
    for argv, stdin in plan.steps():
        session.run(argv, stdin=stdin)


def host_reconcile(*, kind: str, pk: int) -> ReconcileResult | None:
    """Bring one host to its desired state. Returns None when the host is gone
    or disabled; raises HostBusy when another worker holds it, SSHError or
    DataplaneValueError on failure (after recording it for users to see)."""
    model = _model(kind)
    # From here on, a new request must enqueue a new task: this one may
    # already have read the state it will apply.
    model.objects.filter(pk=pk).update(reconcile_queued_at=None)
    token = _lease_acquire(model, pk)
    if token is None:
        if not model.objects.filter(pk=pk).exists():
            return None
        raise HostBusy(f"{kind} {pk} is being reconciled by another worker")
    try:
        host = model.objects.select_related("region").get(pk=pk)
        if not host.enabled:
            return None
        with ops_logs.log_context(host=host.name):
            return _reconcile(host, model, token)
    finally:
        _lease_release(model, pk, token)


def _reconcile(host: Gateway | Node, model: type[Gateway] | type[Node], token: str) -> ReconcileResult:
    started = time.monotonic()
    is_gateway = isinstance(host, Gateway)
    plan: Any = None
    try:
        # Hostile or broken values in the database fail here, before any connection.
        plan = gateway_desired(host) if is_gateway else node_desired(host)
        session = host_session(host)
        actual = host_read_actual(session, host)
        if is_gateway and host.draining and not plan.state.addresses:
            change = _decommission_gateway(session, host, actual)
            return _finish(host, plan, change, started)
        change = dp.plan_gateway(actual, plan.state) if is_gateway else dp.plan_node(actual, plan.state)
        if not change.is_empty:
            if not _lease_renew(model, host.pk, token):
                raise HostBusy(f"lost the lease on {host.name}")
            _apply(session, change)
            if is_gateway and change.post_ip:
                # Removed addresses stayed recorded as ours until they were gone
                # (so a failure half-way never orphans one); now drop the record.
                session.run(["nft", "-f", "-"], stdin=dp.render_gateway_nft(plan.state))
            # Verify: what the host now reports must be what we wanted.
            after = host_read_actual(session, host)
            if after != plan.state:
                recheck = dp.plan_gateway(after, plan.state) if is_gateway else dp.plan_node(after, plan.state)
                raise dp.DataplaneValueError(f"host does not hold the applied state: {recheck.summary()}")
    except HostKeyMismatch as exc:
        _record_key_mismatch(host, exc, plan.apps if plan else _pending_apps(host))
        raise
    except (SSHError, dp.DataplaneValueError, OSError) as exc:
        _record_failure(host, exc, plan.apps if plan else _pending_apps(host), time.monotonic() - started)
        raise
    return _finish(host, plan, change, started)


def _finish(host: Gateway | Node, plan: Any, change: dp.Plan, started: float) -> ReconcileResult:
    duration = time.monotonic() - started
    settled = _record_success(host, plan, change, duration)
    return ReconcileResult(
        host=host.name, changed=not change.is_empty, summary=change.summary(), duration=duration, settled_apps=settled
    )


def _decommission_gateway(session: SSHSession, host: Gateway, actual: dp.GatewayState) -> dp.Plan:
    """A drained gateway that holds no address keeps nothing of ours: no
    table, no addresses, no routes. It is ready for maintenance or removal;
    undraining brings everything back on the next reconcile."""
    exists = session.run(["nft", "list", "table", "ip", dp.NFT_TABLE], check=False).exit_status == 0
    lines = [f"addr del {a}/32 dev {actual.public_interface}" for a in sorted(actual.addresses)]
    lines += [f"route del {cidr} via {via} proto {dp.RT_PROTO}" for cidr, via in actual.return_routes.items()]
    if not exists and not lines:
        return dp.Plan()
    if lines:
        session.run(["ip", "-batch", "-"], stdin="".join(f"{line}\n" for line in lines))
    if exists:
        session.run(["nft", "delete", "table", "ip", dp.NFT_TABLE])
    after = host_read_actual(session, host)
    if after != dp.GatewayState.build(public_interface=host.public_interface):
        raise dp.DataplaneValueError("the drained gateway still holds product state after removal")
    return dp.Plan(post_ip=lines, changes=("drained: product table, addresses and routes removed",))


def _pending_apps(host: Gateway | Node) -> set[int]:
    return set(HostSync.objects.filter(**_host_kw(host)).values_list("app_id", flat=True))


def _host_kw(host: Gateway | Node) -> dict[str, Any]:
    return {"gateway": host} if isinstance(host, Gateway) else {"node": host}


def _record_success(host: Gateway | Node, plan: Any, change: dp.Plan, duration: float) -> int:
    ops_metrics.reconcile_succeeded(host=host, duration=duration)
    now = timezone.now()
    is_gateway = isinstance(host, Gateway)
    with transaction.atomic():
        # Same lock order as the services (app row first, then its addresses
        # and syncs), so a toggle racing this bookkeeping waits instead of deadlocking.
        list(App.objects.select_for_update().filter(pk__in=plan.apps).order_by("pk").values_list("pk", flat=True))
        if is_gateway:
            EgressIP.objects.filter(pk__in=plan.live_ip_ids, programmed=False).update(programmed=True)
            EgressIP.objects.filter(pk__in=plan.removed_ip_ids, programmed=True).update(programmed=False)
        settled_apps = set(HostSync.objects.filter(pk__in=plan.settles).values_list("app_id", flat=True))
        HostSync.objects.filter(pk__in=plan.settles).delete()
        fields = {
            "last_reconciled_at": now,
            "last_reconcile_duration": duration,
            "last_reconcile_error": "",
            "reconcile_failures": 0,
            "last_seen_at": now,
        }
        type(host).objects.filter(pk=host.pk).update(**fields)
        if not change.is_empty:
            type(host).objects.filter(pk=host.pk).update(reconcile_count=F("reconcile_count") + 1)
            event_record(
                kind=f"{host.kind}.reconciled",
                message=f"{host.name}: {change.summary()} in {duration * 1000:.0f} ms.",
                actor=WORKER,
                data={"duration_ms": round(duration * 1000, 1), "changes": list(change.changes)},
                **_host_kw(host),
            )
        for app in App.objects.filter(pk__in=settled_apps):
            event_record(
                kind=f"egress.{host.kind}_configured",
                message=f"{'Gateway' if is_gateway else 'Node'} {host.name} configured.",
                actor=WORKER,
                app=app,
                data={"duration_ms": round(duration * 1000, 1)},
                **_host_kw(host),
            )
    follow_gateways: set[int] = set()
    follow_nodes: set[int] = set()
    for app_id in settled_apps:
        g, n = app_settle(app_id=app_id)
        follow_gateways |= g
        follow_nodes |= n
    if is_gateway:
        # Make before break: nodes may now steer towards what this gateway holds.
        follow_nodes |= set(
            HostSync.objects.filter(app_id__in=settled_apps, node__isnull=False).values_list("node_id", flat=True)
        )
    if not is_gateway:
        from .drain import drain_progress

        try:
            drain_progress(region_id=host.region_id)
        except Exception:  # the reconcile itself succeeded; the sweep retries this
            logger.exception("drain progress after reconciling %s failed", host.name)
    if follow_gateways or follow_nodes:
        with transaction.atomic():
            reconcile_request(gateways=follow_gateways, nodes=follow_nodes)
    return len(settled_apps)


@ops_logs.logged_with(app_id="app_id")
def app_settle(*, app_id: int) -> tuple[set[int], set[int]]:
    """Move an app forward once hosts caught up; returns (gateway ids, node ids)
    that now have work because of it."""
    with transaction.atomic():
        app = App.objects.select_for_update().filter(pk=app_id).first()
        if app is None:
            return set(), set()
        remaining = list(HostSync.objects.filter(app=app).values_list("gateway_id", "node_id"))
        gw_left = {g for g, _ in remaining if g}
        node_left = {n for _, n in remaining if n}
        now = timezone.now()
        if app.egress_type == EgressType.DEDICATED:
            if remaining:
                if not gw_left and app.egress_status in (EgressStatus.ASSIGNING, EgressStatus.FAILED):
                    _status(app, EgressStatus.ASSIGNING, "Gateways ready; steering traffic on the nodes.", now)
                    return set(), node_left
                return set(), set()
            status, message = app_health_status(app)
            if app.egress_status != status or app.egress_message != message:
                latency = (now - app.egress_requested_at).total_seconds() if app.egress_requested_at else None
                _status(app, status, message, now)
                if status == EgressStatus.ASSIGNED:
                    ops_metrics.toggle_assigned(latency)
                    addresses = list(app.egress_ips.values_list("address", flat=True))
                    event_record(
                        kind="egress.assigned",
                        message="Dedicated egress is live: " + ", ".join(addresses) + ".",
                        actor=WORKER,
                        app=app,
                        data={"latency_ms": round(latency * 1000, 1) if latency is not None else None},
                    )
            return set(), set()
        # Shared: nodes first, then gateways, then the addresses go to quarantine.
        if node_left:
            return set(), set()
        if gw_left:
            if app.egress_status != EgressStatus.RELEASING or "gateways" not in app.egress_message:
                _status(app, EgressStatus.RELEASING, "Nodes no longer steer; removing addresses from gateways.", now)
            return gw_left, set()
        released = egress_ips_release(app=app, now=now)
        _status(app, EgressStatus.DISABLED, "", now)
        if released:
            event_record(
                kind="egress.disabled",
                message="Back to shared egress. Released to quarantine: " + ", ".join(released) + ".",
                actor=WORKER,
                app=app,
                data={"released": released, "quarantine_days": settings.EGRESS_QUARANTINE_DAYS},
            )
        if app.delete_requested:
            name = app.name
            event_record(kind="app.deleted", message=f"App {name} deleted.", actor=WORKER, app=app, subject=name)
            app.delete()
    return set(), set()


def app_health_status(app: App) -> tuple[str, str]:
    """assigned, or degraded with the reason, from the health of the app's gateways."""
    ips = list(app.egress_ips.select_related("gateway").all())
    if not ips:
        return EgressStatus.FAILED, "No egress address is assigned."
    active = next((ip for ip in ips if ip.role == EgressIPRole.ACTIVE), ips[0])
    healthy = [ip for ip in ips if ip.gateway and ip.gateway.health != HealthStatus.UNHEALTHY]
    if active.gateway and active.gateway.health == HealthStatus.UNHEALTHY:
        if healthy:
            return (
                EgressStatus.DEGRADED,
                f"Gateway {active.gateway.name} is down; traffic leaves from the standby address "
                f"{healthy[0].address}.",
            )
        return EgressStatus.DEGRADED, "Every gateway of this app is down; traffic cannot leave until one recovers."
    if len(ips) < min(settings.EGRESS_IPS_PER_APP, 2):
        return EgressStatus.ASSIGNED, "Redundancy is reduced: only one gateway can hold this app's addresses right now."
    if len(healthy) < len(ips):
        down = ", ".join(ip.gateway.name for ip in ips if ip not in healthy and ip.gateway)
        return EgressStatus.ASSIGNED, f"Standby gateway {down} is down; no failover until it recovers."
    return EgressStatus.ASSIGNED, ""


def _status(app: App, status: str, message: str, now: dt.datetime) -> None:
    app.egress_status = status
    app.egress_message = message
    app.egress_updated_at = now
    App.objects.filter(pk=app.pk).update(egress_status=status, egress_message=message, egress_updated_at=now)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text[:500]


def _record_failure(host: Gateway | Node, exc: BaseException, app_ids: set[int], duration: float) -> None:
    ops_metrics.reconcile_failed(host=host, exc=exc, duration=duration)
    now = timezone.now()
    reason = _reason(exc)
    model = type(host)
    failures = host.reconcile_failures + 1
    model.objects.filter(pk=host.pk).update(
        last_reconcile_error=reason, reconcile_failures=failures, last_reconcile_duration=duration
    )
    label = "Gateway" if isinstance(host, Gateway) else "Node"
    message = f"{label} {host.name} could not be configured: {reason}. Retrying automatically."
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
        pending = App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct()
        for app in pending:
            if app.egress_status in (EgressStatus.ASSIGNING, EgressStatus.RELEASING, EgressStatus.FAILED):
                if app.egress_message != message:
                    _status(app, EgressStatus.FAILED, message, now)
                    event_record(
                        kind="egress.failed", message=message, level=EventLevel.ERROR, actor=WORKER, app=app,
                        **_host_kw(host),
                    )
            elif app.egress_status == EgressStatus.ASSIGNED:
                _status(app, EgressStatus.DEGRADED, message, now)
    logger.warning("reconcile of %s %s failed: %s", host.kind, host.name, reason)


def _record_key_mismatch(host: Gateway | Node, exc: HostKeyMismatch, app_ids: set[int]) -> None:
    ops_metrics.reconcile_failed(host=host, exc=exc)
    now = timezone.now()
    presented = getattr(exc, "actual_key", "") or ""
    expected_fp = getattr(exc, "expected_fingerprint", "") or getattr(exc, "expected", "")
    actual_fp = getattr(exc, "actual_fingerprint", "") or getattr(exc, "actual", "")
    first = host.host_key_mismatch_at is None
    type(host).objects.filter(pk=host.pk).update(
        host_key_mismatch_at=host.host_key_mismatch_at or now,
        presented_host_key=presented or host.presented_host_key,
        last_reconcile_error="Host key mismatch: refused to connect.",
        reconcile_failures=host.reconcile_failures + 1,
    )
    message = (
        f"SECURITY: {host.name} presented a different SSH host key ({actual_fp}) than the pinned one "
        f"({expected_fp}). Nothing was sent to it. A platform admin must verify the host and accept the new key."
    )
    with transaction.atomic():
        if first:
            event_record(
                kind="host.key_mismatch",
                message=message,
                level=EventLevel.ERROR,
                actor=WORKER,
                data={"expected": str(expected_fp), "presented": str(actual_fp)},
                **_host_kw(host),
            )
        user_message = f"{host.name} failed a security check; a platform admin has been alerted."
        for app in App.objects.filter(pk__in=app_ids, host_syncs__isnull=False).distinct():
            if app.egress_message != user_message:
                status = EgressStatus.DEGRADED if app.egress_status == EgressStatus.ASSIGNED else EgressStatus.FAILED
                _status(app, status, user_message, now)
    logger.error("host key mismatch on %s %s: expected %s, presented %s", host.kind, host.name, expected_fp, actual_fp)
