"""Health of gateways and nodes, probed over SSH, with hysteresis.

A gateway is healthy when it answers and both its public interface and the
interface holding its transit address are up. A definitive "down" answer from
a reachable host counts at once; an unreachable host must fail
EGRESS_HEALTH_FAILURE_THRESHOLD probes in a row (a lost packet is not an
outage). Recovery needs the same number of good probes in a row, so a
flapping gateway does not drag traffic back and forth.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ...ops import metrics as ops_metrics
from ..models import App, EgressIP, EgressIPStatus, EgressStatus, EgressType, EventLevel, Gateway, HealthStatus, Node
from .events import WORKER, event_record
from .reconcile import reconcile_request

__all__ = ["ProbeResult", "host_probe", "hosts_health_check", "gateway_link_health", "health_record"]

logger = logging.getLogger(__name__)

_UP = {"UP", "UNKNOWN"}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    definitive: bool  # the host answered: its verdict is not a network blip
    message: str


def gateway_link_health(link_json: str, public_interface: str, transit_address: str) -> ProbeResult:
    """Judge `ip -j -4 addr show` output of a gateway (pure; unit-tested)."""
    try:
        links = json.loads(link_json or "[]")
    except ValueError:
        return ProbeResult(False, True, "the gateway returned unreadable interface data")
    by_name = {link.get("ifname"): link for link in links if isinstance(link, dict)}
    pub = by_name.get(public_interface)
    if pub is None:
        return ProbeResult(False, True, f"public interface {public_interface} is missing")
    if pub.get("operstate") not in _UP or "UP" not in pub.get("flags", ["UP"]):
        return ProbeResult(False, True, f"public interface {public_interface} is down")
    transit = next(
        (
            link
            for link in links
            if any(a.get("local") == transit_address for a in link.get("addr_info", []) if isinstance(a, dict))
        ),
        None,
    )
    if transit is None:
        return ProbeResult(False, True, f"transit address {transit_address} is not configured")
    if transit.get("operstate") not in _UP or "UP" not in transit.get("flags", ["UP"]):
        return ProbeResult(False, True, f"transit interface {transit.get('ifname')} is down")
    return ProbeResult(True, True, "")


def host_probe(host: Gateway | Node) -> ProbeResult:
    from workers.ssh import HostKeyMismatch, SSHError

    from .hostsync import host_session

    try:
        session = host_session(host)
        if isinstance(host, Gateway):
            out = session.run(["ip", "-j", "-4", "addr", "show"], timeout=settings.EGRESS_SSH_CONNECT_TIMEOUT)
            return gateway_link_health(out.stdout, host.public_interface, host.transit_address)
        session.run(["true"], timeout=settings.EGRESS_SSH_CONNECT_TIMEOUT)
        return ProbeResult(True, True, "")
    except HostKeyMismatch as exc:
        ops_metrics.ssh_error(exc, operation="probe")
        return ProbeResult(False, True, "SSH host key mismatch")
    except SSHError as exc:
        ops_metrics.ssh_error(exc, operation="probe")
        return ProbeResult(False, False, f"unreachable: {str(exc)[:200]}")
    except Exception as exc:  # a probe never takes the health loop down
        logger.exception("health probe of %s failed", host)
        return ProbeResult(False, False, f"probe error: {exc.__class__.__name__}")


def health_record(host: Gateway | Node, result: ProbeResult) -> bool:
    """Apply one probe result with hysteresis; returns True when health changed."""
    now = timezone.now()
    threshold = max(1, settings.EGRESS_HEALTH_FAILURE_THRESHOLD)
    fields: dict[str, Any] = {"health_checked_at": now}
    new = host.health
    if result.ok:
        fields.update(health_successes=host.health_successes + 1, health_failures=0, last_seen_at=now)
        if host.health == HealthStatus.UNKNOWN or (
            host.health == HealthStatus.UNHEALTHY and host.health_successes + 1 >= threshold
        ):
            new = HealthStatus.HEALTHY
        if new == HealthStatus.HEALTHY:
            fields["health_message"] = ""
    else:
        failures = host.health_failures + 1
        fields.update(health_failures=failures, health_successes=0, health_message=result.message)
        if result.definitive or failures >= threshold:
            new = HealthStatus.UNHEALTHY
    changed = new != host.health
    if changed:
        fields.update(health=new, health_changed_at=now)
    type(host).objects.filter(pk=host.pk).update(**fields)
    for key, value in fields.items():
        setattr(host, key, value)
    return changed


def _on_gateway_change(gateway: Gateway) -> None:
    """Failover/failback: nodes re-steer (one transaction per node) and the
    apps on this gateway show what happened."""
    ops_metrics.gateway_health_changed(gateway=gateway)
    with transaction.atomic():
        healthy = gateway.health == HealthStatus.HEALTHY
        event_record(
            kind="gateway.healthy" if healthy else "gateway.unhealthy",
            message=f"Gateway {gateway.name} is {'healthy again' if healthy else 'unhealthy: ' + gateway.health_message}.",
            level=EventLevel.INFO if healthy else EventLevel.ERROR,
            actor=WORKER,
            gateway=gateway,
        )
        reconcile_request(nodes=Node.objects.filter(region_id=gateway.region_id, enabled=True))
    app_ids = set(
        EgressIP.objects.filter(gateway=gateway, status=EgressIPStatus.ASSIGNED).values_list("app_id", flat=True)
    )
    apps_health_refresh(app_ids)


def apps_health_refresh(app_ids: set[int]) -> None:
    from .hostsync import _status, app_health_status

    now = timezone.now()
    for app in App.objects.filter(
        pk__in=app_ids,
        egress_type=EgressType.DEDICATED,
        egress_status__in=[EgressStatus.ASSIGNED, EgressStatus.DEGRADED],
        host_syncs__isnull=True,
    ):
        status, message = app_health_status(app)
        if (status, message) != (app.egress_status, app.egress_message):
            _status(app, status, message, now)
            event_record(
                kind="egress.degraded" if status == EgressStatus.DEGRADED else "egress.assigned",
                message=message or "All gateways of this app are healthy again.",
                level=EventLevel.WARNING if status == EgressStatus.DEGRADED else EventLevel.INFO,
                actor=WORKER,
                app=app,
            )


@contextmanager
def _single_flight(name: str, ttl: float) -> Iterator[bool]:
    """At most one health round at a time across all workers: two rounds
    writing results probed at different moments would make health flap."""
    import redis

    from ...ops.store import redis_client

    # The per-process pooled client: this runs every second.
    client = redis_client(settings.CELERY_BROKER_URL, timeout=2)
    token = secrets.token_hex(8)
    key = f"egress:lock:{name}"
    try:
        got = bool(client.set(key, token, nx=True, px=int(ttl * 1000)))
    except redis.RedisError:
        got = True  # no broker, no concurrency problem worth skipping a round for
    try:
        yield got
    finally:
        if got:
            try:
                if client.get(key) == token.encode():
                    client.delete(key)
            except redis.RedisError:
                pass


def hosts_health_check() -> dict[str, int]:
    # Long enough for a round whose probes all time out, short enough that a
    # worker killed mid-round blocks health checks only briefly.
    with _single_flight("health", ttl=2 * settings.EGRESS_SSH_CONNECT_TIMEOUT + 2) as mine:
        if not mine:
            return {"hosts": 0, "changed": 0, "skipped": 1}
        return _health_round()


def _health_round() -> dict[str, int]:
    hosts: list[Gateway | Node] = list(Gateway.objects.filter(enabled=True)) + list(Node.objects.filter(enabled=True))
    if not hosts:
        return {"hosts": 0, "changed": 0}
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        results = list(pool.map(host_probe, hosts))
    changed = 0
    for host, result in zip(hosts, results, strict=True):
        if health_record(host, result):
            changed += 1
            logger.info("%s %s is now %s %s", host.kind, host.name, host.health, host.health_message)
            if isinstance(host, Gateway):
                _on_gateway_change(host)
            else:
                event_record(
                    kind=f"node.{host.health}",
                    message=f"Node {host.name} is {host.health}. {host.health_message}".strip(),
                    level=EventLevel.INFO if host.health == HealthStatus.HEALTHY else EventLevel.WARNING,
                    actor=WORKER,
                    node=host,
                )
    return {"hosts": len(hosts), "changed": changed}
