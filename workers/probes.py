"""Health probing: every enabled host over SSH, in parallel, once per round; the verdicts go through
the hysteresis and are recorded by the services (egressportal/core/services/hosthealth.py).

A gateway is judged by its links (rules/health.py ``gateway_link_health``); a node by answering at all.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import redis
from django.conf import settings

from egressportal.core.models import Gateway, Node
from egressportal.core.rules.health import ProbeResult, gateway_link_health
from egressportal.core.services.hosthealth import health_changed, health_record
from egressportal.dataplane import probe_gateway_links_command, probe_node_command
from egressportal.ops import instruments
from egressportal.ops.store import redis_client

from .reconcile import host_session
from .ssh import HostKeyMismatch, SSHError

__all__ = ["host_probe", "hosts_health_check"]

logger = logging.getLogger(__name__)


def host_probe(host: Gateway | Node) -> ProbeResult:
    try:
        session = host_session(host)
        if isinstance(host, Gateway):
            out = session.run(probe_gateway_links_command(), timeout=settings.EGRESS_SSH_CONNECT_TIMEOUT)
            return gateway_link_health(out.stdout, host.public_interface, host.transit_address)
        session.run(probe_node_command(), timeout=settings.EGRESS_SSH_CONNECT_TIMEOUT)
        return ProbeResult(True, True, "")
    except HostKeyMismatch as exc:
        instruments.ssh_error(exc.kind, operation="probe")
        return ProbeResult(False, True, "SSH host key mismatch")
    except SSHError as exc:
        instruments.ssh_error(exc.kind, operation="probe")
        return ProbeResult(False, False, f"unreachable: {str(exc)[:200]}")
    except Exception as exc:  # a probe never takes the health loop down
        logger.exception("health probe of %s failed", host)
        return ProbeResult(False, False, f"probe error: {exc.__class__.__name__}")


@contextmanager
def _single_flight(name: str, ttl: float) -> Iterator[bool]:
    """At most one health round at a time across all workers: two rounds
    writing results probed at different moments would make health flap."""
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
            health_changed(host)
    return {"hosts": len(hosts), "changed": changed}
