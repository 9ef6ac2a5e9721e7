"""A small metrics store in Redis, shared by every worker on every machine.

Worker-side observations (reconcile outcomes and durations, SSH errors,
toggle-to-assigned latency, failovers) are atomic HINCRBY/HINCRBYFLOAT updates
on one hash per metric; the portal's /metrics renders them with a custom
collector. Why not prometheus_client's multiprocess mode: it shares files
between processes of one machine only, and our workers run on several. Why not
an exporter per worker: every worker would need a reachable port and a scrape
target of its own, and a prefork child's observations would still need to
reach its parent. Redis is already the one thing every worker and the portal
share, and an update is one round trip.

Recording must never break the work being measured: every call swallows its
errors, and after a failure the store stays quiet for a few seconds (a circuit
breaker) so that a Redis outage costs one short timeout, not one per call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["MetricSpec", "metric_store", "MetricStore", "redis_client"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "egress:metrics:"
_BREAKER_SECONDS = 5.0
_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client(url: str | None = None, *, timeout: float = 0.5) -> redis.Redis:
    """A client with short timeouts (one per URL and timeout, per process; redis-py's pool is fork-safe)."""
    url = url or settings.EGRESS_METRICS_REDIS_URL or settings.REDIS_URL
    key = f"{url}#{timeout}"
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            # No retries: a caller (a heartbeat on the worker's event loop, a
            # probe, a scrape) must get its answer or its error within ``timeout``.
            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0)
            )
            _clients[key] = client
        return client


@dataclass(frozen=True)
class MetricSpec:
    name: str  # exposition name without the _total suffix of counters
    kind: str  # "counter" | "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = field(default=())

    @property
    def key(self) -> str:
        return KEY_PREFIX + self.name


def _field(values: Sequence[str]) -> str:
    return json.dumps([str(v) for v in values], separators=(",", ":"))


class MetricStore:
    def __init__(self) -> None:
        self._quiet_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._quiet_until

    def _trip(self, exc: Exception) -> None:
        self._quiet_until = time.monotonic() + _BREAKER_SECONDS
        logger.warning("metrics store unavailable for %.0fs: %s", _BREAKER_SECONDS, exc.__class__.__name__)

    def inc(self, spec: MetricSpec, labels: Sequence[str], amount: float = 1.0) -> None:
        if not self._available():
            return
        try:
            redis_client().hincrbyfloat(spec.key, _field(labels), amount)
        except Exception as exc:
            self._trip(exc)

    def observe(self, spec: MetricSpec, labels: Sequence[str], value: float) -> None:
        """One histogram observation: its bucket, the sum and the count, in one MULTI."""
        if not self._available():
            return
        base = _field(labels)
        index = next((i for i, le in enumerate(spec.buckets) if value <= le), len(spec.buckets))
        try:
            pipe = redis_client().pipeline(transaction=True)
            pipe.hincrby(spec.key, f"{base}|b{index}", 1)
            pipe.hincrbyfloat(spec.key, f"{base}|sum", value)
            pipe.hincrby(spec.key, f"{base}|count", 1)
            pipe.execute()
        except Exception as exc:
            self._trip(exc)

    def read(self, specs: Sequence[MetricSpec], client: redis.Redis | None = None) -> dict[str, dict[str, str]]:
        """Every metric's hash, decoded, in one round trip (raises on Redis errors)."""
        pipe = (client or redis_client(timeout=1.0)).pipeline(transaction=False)
        for spec in specs:
            pipe.hgetall(spec.key)
        out: dict[str, dict[str, str]] = {}
        for spec, raw in zip(specs, pipe.execute(), strict=True):
            out[spec.name] = {k.decode(): v.decode() for k, v in raw.items()}
        return out

    def reset(self, specs: Sequence[MetricSpec]) -> None:
        redis_client().delete(*[spec.key for spec in specs])


def decode_counter(raw: dict[str, str]) -> list[tuple[list[str], float]]:
    return [(json.loads(k), float(v)) for k, v in sorted(raw.items())]


def decode_histogram(spec: MetricSpec, raw: dict[str, str]) -> list[tuple[list[str], list[tuple[str, float]], float]]:
    """(label values, cumulative buckets including +Inf, sum) per label set."""
    series: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        base, _, part = name.rpartition("|")
        entry = series.setdefault(base, {"buckets": [0] * (len(spec.buckets) + 1), "sum": 0.0})
        if part == "sum":
            entry["sum"] = float(value)
        elif part.startswith("b"):
            index = int(part[1:])
            if 0 <= index <= len(spec.buckets):
                entry["buckets"][index] += int(float(value))
    out = []
    for base, entry in sorted(series.items()):
        running, cumulative = 0, []
        for le, count in zip([*map(_le, spec.buckets), "+Inf"], entry["buckets"], strict=True):
            running += count
            cumulative.append((le, float(running)))
        out.append((json.loads(base), cumulative, entry["sum"]))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


metric_store = MetricStore()
