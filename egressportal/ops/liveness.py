"""Liveness and readiness: the portal's probes, the workers' heartbeat and beat's last sweep.

A worker proves it is alive by a heartbeat written from its own event loop
(a Celery bootstep timer, so a wedged consumer stops beating): to a local file
for a liveness probe that must not depend on Redis, and to Redis for the
metrics. Beat proves it is alive by the sweeps it schedules: each sweep a
worker runs records its time in Redis.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from kombu import Connection

from .logs import scrub
from .store import redis_client

__all__ = [
    "HEARTBEAT_KEY",
    "LAST_SWEEP_KEY",
    "ConsumptionWatch",
    "heartbeat_file",
    "last_sweep_timestamp",
    "readiness",
    "record_sweep",
    "worker_heartbeat",
    "worker_heartbeat_age",
    "worker_heartbeats",
]

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "egress:ops:worker_heartbeats"  # sorted set: worker hostname -> unix time
LAST_SWEEP_KEY = "egress:ops:last_sweep_at"  # unix time of the last finished sweep
READY_TIMEOUT = 2.0
_FORGET_WORKERS_AFTER = 86400.0  # a worker gone for a day drops out of the metrics

_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def heartbeat_file() -> Path:
    return Path(settings.EGRESS_WORKER_HEARTBEAT_FILE or Path(tempfile.gettempdir()) / "egress-worker-heartbeat")


def worker_heartbeat(hostname: str, *, now: float | None = None) -> None:
    """Record that this worker's event loop is turning (file first: it needs nothing else)."""
    now = time.time() if now is None else now
    path = heartbeat_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(f"{now:.3f}\n")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot write the worker heartbeat file %s: %s", path, exc)
    try:
        client = redis_client()
        pipe = client.pipeline(transaction=False)
        pipe.zadd(HEARTBEAT_KEY, {hostname: now})
        pipe.zremrangebyscore(HEARTBEAT_KEY, "-inf", now - _FORGET_WORKERS_AFTER)
        pipe.execute()
    except Exception as exc:  # the broker being down is not this worker's death
        logger.debug("heartbeat to Redis failed: %s", exc)


class ConsumptionWatch:
    """Liveness that reflects consumption, not only a turning event loop: a worker whose queue holds
    messages it could take (a free slot) while it has received none for ``stuck_after`` seconds has
    stopped consuming (after a Redis restart kombu can leave a consumer waiting on a dead connection while
    the loop, and so the heartbeat, go on). Fed from the heartbeat: ``observe`` says whether it is stuck."""

    def __init__(self, stuck_after: float, *, now: float | None = None) -> None:
        self.stuck_after = stuck_after
        self.last_received = time.monotonic() if now is None else now
        self.waiting_since: float | None = None

    def received(self, *, now: float | None = None) -> None:
        self.last_received = time.monotonic() if now is None else now

    def observe(self, *, waiting: int | None, free_slots: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if waiting is None:  # the queue cannot be read (Redis down): no verdict
            return False
        if waiting <= 0 or free_slots <= 0:
            self.waiting_since = None
            return False
        if self.waiting_since is None:
            self.waiting_since = now
        quiet_since = max(self.waiting_since, self.last_received)  # messages waiting and none taken since
        return now - quiet_since >= self.stuck_after


def worker_heartbeat_age(path: Path | None = None, *, now: float | None = None) -> float | None:
    """Seconds since this machine's worker last beat, or None when it never did."""
    path = path or heartbeat_file()
    try:
        text = path.read_text().strip()
        stamp = float(text) if text else path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return max(0.0, (time.time() if now is None else now) - stamp)


def worker_heartbeats() -> dict[str, float]:
    """Every worker's last heartbeat (unix time), from Redis."""
    raw = redis_client(timeout=1.0).zrange(HEARTBEAT_KEY, 0, -1, withscores=True)
    return {name.decode(): float(score) for name, score in raw}


def record_sweep(*, now: float | None = None) -> None:
    try:
        redis_client().set(LAST_SWEEP_KEY, f"{time.time() if now is None else now:.3f}")
    except Exception as exc:
        logger.debug("recording the sweep time failed: %s", exc)


def last_sweep_timestamp() -> float | None:
    """Unix time of the last finished sweep, or None when there was none (or Redis cannot say)."""
    try:
        raw = redis_client(timeout=1.0).get(LAST_SWEEP_KEY)
    except Exception as exc:
        logger.debug("reading the sweep time from Redis failed: %s", exc)
        return None
    return float(raw) if raw else None


# -- readiness -------------------------------------------------------------------------------------


def _check_database() -> None:
    # A thread of its own has a connection of its own: closed right after, so
    # a probe neither keeps connections open nor shares a broken one.
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connections.close_all()


def _check_broker() -> None:
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        if not redis_client(url, timeout=1.0).ping():
            raise ConnectionError("no PONG from the broker")
        return
    with Connection(url, connect_timeout=1.0) as conn:
        conn.ensure_connection(max_retries=1, timeout=1.0)


CHECKS = {"database": _check_database, "broker": _check_broker}


def readiness(timeout: float = READY_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """Run every check in parallel, each bounded by ``timeout``; (ok, JSON-able report)."""
    started = time.monotonic()
    futures = {name: _pool.submit(_timed, check) for name, check in CHECKS.items()}
    checks: dict[str, Any] = {}
    for name, future in futures.items():
        remaining = max(0.05, timeout - (time.monotonic() - started))
        try:
            checks[name] = future.result(timeout=remaining)
        except FutureTimeout:
            checks[name] = {"ok": False, "error": f"timed out after {timeout:g}s"}
    failed = [name for name, result in checks.items() if not result["ok"]]
    report = {"status": "ok" if not failed else "unavailable", "checks": checks}
    if failed:
        report["failed"] = failed
    return not failed, report


def _timed(check: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        check()
    except Exception as exc:
        return {
            "ok": False,
            "error": scrub(f"{exc.__class__.__name__}: {exc}")[:300],
            "ms": round((time.monotonic() - started) * 1000, 1),
        }
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
