"""Prometheus metrics for the portal's /metrics.

Two sources, one scrape:
- Gauges computed from the database (and the broker) at scrape time: pool
  utilization, apps by status, host health, queue depth, last sweep, worker
  heartbeats. They are right however many processes serve /metrics, because
  nothing is kept in a process.
- Worker-side observations (reconcile outcomes and durations, SSH errors,
  toggle-to-assigned latency, gateway failovers) recorded in Redis by the
  hooks in instruments.py (see store.py for why) and rendered here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import Coalesce
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from egressportal.core import selectors
from egressportal.core.models import App, EgressStatus, Gateway, HealthStatus, Node

from .instruments import WORKER_METRICS
from .liveness import last_sweep_timestamp, worker_heartbeats
from .store import decode_counter, decode_histogram, metric_store, redis_client

__all__ = ["STUCK_AFTER", "EgressCollector", "render"]

logger = logging.getLogger(__name__)

STUCK_AFTER = dt.timedelta(minutes=5)


# -- collectors ------------------------------------------------------------------------------------


class ScrapeErrors:
    def __init__(self) -> None:
        self.failed: dict[str, int] = {}

    def run(self, source: str, produce: Any) -> list[Metric]:
        self.failed.setdefault(source, 0)
        try:
            return list(produce())
        except Exception as exc:
            self.failed[source] = 1
            logger.warning("metrics source %s failed: %s", source, exc.__class__.__name__, exc_info=True)
            return []


class EgressCollector(Collector):
    """Everything /metrics shows, gathered at scrape time."""

    def collect(self) -> Iterator[Metric]:
        errors = ScrapeErrors()
        yield from errors.run("database", _database_metrics)
        yield from errors.run("worker_metrics", _worker_metrics)
        yield from errors.run("broker", _broker_metrics)
        yield from errors.run("heartbeats", _heartbeat_metrics)
        up = GaugeMetricFamily(
            "egress_metrics_source_up", "1 when a metrics source answered this scrape.", labels=["source"]
        )
        for source, failed in errors.failed.items():
            up.add_metric([source], 0 if failed else 1)
        yield up


def _database_metrics() -> Iterable[Metric]:

    labels = ["pool", "region"]
    size = GaugeMetricFamily("egress_pool_size_addresses", "Usable addresses of an IP pool.", labels=labels)
    used = GaugeMetricFamily("egress_pool_used_addresses", "Addresses assigned to apps.", labels=labels)
    quarantined = GaugeMetricFamily(
        "egress_pool_quarantined_addresses", "Released addresses in quarantine (not yet reusable).", labels=labels
    )
    free = GaugeMetricFamily("egress_pool_free_addresses", "Addresses an enable can take now.", labels=labels)
    ratio = GaugeMetricFamily(
        "egress_pool_utilization_ratio", "(used + quarantined) / size: 1 means exhausted.", labels=labels
    )
    for pool in selectors.pool_list():
        util = selectors.pool_utilization(pool)
        values = [pool.name, pool.region.slug]
        size.add_metric(values, util.size)
        used.add_metric(values, util.assigned)
        quarantined.add_metric(values, util.quarantined)
        free.add_metric(values, util.free)
        ratio.add_metric(values, util.percent_used / 100.0)
    yield from (size, used, quarantined, free, ratio)

    counts = dict(App.objects.values_list("egress_status").annotate(n=Count("id")).order_by())
    apps = GaugeMetricFamily("egress_apps", "Apps by egress status.", labels=["status"])
    for status in EgressStatus.values:
        apps.add_metric([status], counts.get(status, 0))
    yield apps

    cutoff = timezone.now() - STUCK_AFTER
    stuck_counts = dict(
        App.objects.filter(egress_status__in=[EgressStatus.ASSIGNING, EgressStatus.RELEASING])
        .annotate(since=Coalesce("egress_requested_at", "egress_updated_at"))
        .filter(since__lt=cutoff)
        .values_list("egress_status")
        .annotate(n=Count("id"))
        .order_by()
    )
    stuck = GaugeMetricFamily(
        "egress_apps_stuck",
        f"Apps pending (assigning or releasing) for more than {int(STUCK_AFTER.total_seconds())} s.",
        labels=["status"],
    )
    for status in (EgressStatus.ASSIGNING, EgressStatus.RELEASING):
        stuck.add_metric([status], stuck_counts.get(status, 0))
    yield stuck

    host_labels = ["kind", "host", "region"]
    health = GaugeMetricFamily(
        "egress_host_health", "Health of enabled gateways and nodes: 1 for the current state.", labels=[*host_labels, "state"]
    )
    mismatch = GaugeMetricFamily(
        "egress_host_key_mismatch", "1 when the host presented another SSH host key than the pinned one.", labels=host_labels
    )
    failures = GaugeMetricFamily(
        "egress_host_reconcile_failures", "Consecutive failed reconciles of the host (0 after a success).", labels=host_labels
    )
    last = GaugeMetricFamily(
        "egress_host_last_reconcile_timestamp_seconds", "When the host last reconciled successfully.", labels=host_labels
    )
    last_duration = GaugeMetricFamily(
        "egress_host_last_reconcile_duration_seconds", "Duration of the host's last reconcile.", labels=host_labels
    )
    fields = ("name", "region__slug", "health", "host_key_mismatch_at", "reconcile_failures", "last_reconciled_at",
              "last_reconcile_duration")
    for model in (Gateway, Node):
        kind = model._meta.model_name
        for name, region, state, key_mismatch_at, n_failures, reconciled_at, duration in (
            model.objects.filter(enabled=True).order_by("name").values_list(*fields)
        ):
            values = [kind, name, region]
            for candidate in HealthStatus.values:
                health.add_metric([*values, candidate], 1 if candidate == state else 0)
            mismatch.add_metric(values, 1 if key_mismatch_at else 0)
            failures.add_metric(values, n_failures)
            if reconciled_at:
                last.add_metric(values, reconciled_at.timestamp())
            if duration is not None:
                last_duration.add_metric(values, duration)
    yield from (health, mismatch, failures, last, last_duration)


def _worker_metrics() -> Iterable[Metric]:
    raw = metric_store.read(WORKER_METRICS)
    for spec in WORKER_METRICS:
        data = raw.get(spec.name, {})
        if spec.kind == "counter":
            family: Metric = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            for values, value in decode_counter(data):
                family.add_metric(values, value)
        else:
            family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
            series = decode_histogram(spec, data)
            if not series and not spec.labels:
                # An unlabelled histogram exists from the start (a rate over nothing is 0, not absent).
                series = [([], [(le, 0.0) for le in [*(repr(float(b)) for b in spec.buckets), "+Inf"]], 0.0)]
            for values, buckets, total in series:
                family.add_metric(values, buckets, total)
        yield family


def _broker_metrics() -> Iterable[Metric]:
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return
    queues = _queue_names()
    client = redis_client(url, timeout=1.0)
    pipe = client.pipeline(transaction=False)
    # kombu keeps one list per priority step: "celery", "celery\x06\x163", ...
    steps = sorted(PRIORITY_STEPS)
    for queue in queues:
        for step in steps:
            pipe.llen(queue if step == 0 else f"{queue}{Channel.sep}{step}")
    pipe.hlen("unacked")
    *lengths, unacked = pipe.execute()
    depth = GaugeMetricFamily("egress_queue_messages", "Messages waiting in a Celery queue (Redis LLEN).", labels=["queue"])
    for i, queue in enumerate(queues):
        depth.add_metric([queue], sum(lengths[i * len(steps) : (i + 1) * len(steps)]))
    yield depth
    yield GaugeMetricFamily(
        "egress_queue_unacked_messages", "Messages delivered to a worker and not acknowledged yet.", value=unacked
    )


def _queue_names() -> list[str]:
    """The default queue, the declared ones (the sweep lane) and every queue a task route names."""
    names = {settings.CELERY_TASK_DEFAULT_QUEUE}
    names |= {q.name for q in getattr(settings, "CELERY_TASK_QUEUES", None) or ()}
    routes = settings.CELERY_TASK_ROUTES or {}
    if isinstance(routes, dict):
        names |= {route["queue"] for route in routes.values() if isinstance(route, dict) and route.get("queue")}
    return sorted(names)


def _heartbeat_metrics() -> Iterable[Metric]:
    sweep = last_sweep_timestamp()
    family = GaugeMetricFamily(
        "egress_last_sweep_timestamp_seconds", "When the drift-repair sweep (scheduled by beat) last ran."
    )
    if sweep is not None:
        family.add_metric([], sweep)
    yield family
    yield GaugeMetricFamily("egress_sweep_period_seconds", "The configured sweep period.", value=settings.EGRESS_SWEEP_SECONDS)
    beats = GaugeMetricFamily(
        "egress_worker_heartbeat_timestamp_seconds", "Last heartbeat of each Celery worker.", labels=["worker"]
    )
    for name, stamp in sorted(worker_heartbeats().items()):
        beats.add_metric([name], stamp)
    yield beats


def render() -> bytes:
    """The exposition text of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EgressCollector())
    return generate_latest(registry)
