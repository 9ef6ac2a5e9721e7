"""Shared setup of the benchmarks: a fresh database, Django, a private Redis, the lab registered in
the database, and real Celery worker processes. Everything a script starts is stopped again, also when
the script fails half-way.

Run a benchmark as root from the repository, after ``./run test`` created .venv:
    .venv/bin/python bench/toggle_latency.py
The database is a fresh SQLite file under var/bench/, or a fresh PostgreSQL database next to the one
``BENCH_DATABASE_URL`` names (e.g. postgres://postgres@127.0.0.1:5432/postgres), dropped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.worker_fixtures import ProberProcess, RedisServer, WorkerProcess, wait_for  # noqa: E402
from workers.lab import DEMO_APPS, Lab, LabConfig  # noqa: E402

__all__ = [
    "bulk_apps",
    "subnets",
    "ROOT",
    "BenchEnv",
    "LAB_CONFIG",
    "RedisServer",
    "WorkerProcess",
    "free_port",
    "machine",
    "percentile",
    "print_table",
    "reconcile_total",
    "summarize",
    "target",
    "timed",
    "wait_for",
    "write_result",
]

RESULTS = ROOT / "bench" / "results"
VAR = ROOT / "var" / "bench"
# The benchmarks' own lab: never the developer's (ep, 0) nor a test session's (t…, 5..14).
LAB_CONFIG = LabConfig(prefix="bn", index=2)

# Worker timings as in production, except the sweep: short enough that drift repair is seen within a
# benchmark, long enough that it does not keep the hosts' leases busy.
WORKER_ENV = {
    "EGRESS_SWEEP_SECONDS": "10",
    "EGRESS_LEASE_SECONDS": "6",
    "EGRESS_COALESCE_STALE_SECONDS": "4",
    "EGRESS_SSH_CONNECT_TIMEOUT": "2",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    lines = [title, "  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        mem_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line for line in cpuinfo if line.startswith("model name")).split(":", 1)[1].strip()
    nft = subprocess.run(["nft", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nft": nft,
    }


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"result written to {path.relative_to(ROOT)}", flush=True)
    return path


def target(name: str, value: float, limit: float, unit: str, *, higher_is_better: bool = False) -> dict[str, Any]:
    met = value >= limit if higher_is_better else value <= limit
    return {"name": name, "value": round(value, 3), "target": limit, "unit": unit, "met": met,
            "comparison": ">=" if higher_is_better else "<="}


def reconcile_total() -> int:
    """Host transactions so far: reconciles that changed something, over every gateway and node."""
    from django.db.models import Sum

    from egressportal.core.models import Gateway, Node

    return (Gateway.objects.aggregate(n=Sum("reconcile_count"))["n"] or 0) + (
        Node.objects.aggregate(n=Sum("reconcile_count"))["n"] or 0
    )


class BenchEnv:
    """One benchmark's world. Use as a context manager::

        with BenchEnv("toggle_latency") as env:
            env.start_worker()
            ...
    """

    def __init__(self, name: str, *, lab: bool = True, redis: bool = True, env: dict[str, str] | None = None,
                 lab_config: LabConfig | None = None) -> None:
        self.name = name
        self.want_lab = lab
        self.lab_config = lab_config or LAB_CONFIG  # a fleet benchmark brings its own (size, prefix, index)
        self.want_redis = redis
        self.extra_env = env or {}
        self.workdir = VAR / name
        self.lab: Lab | None = None
        self.redis: RedisServer | None = None
        self.workers: list[WorkerProcess] = []
        self.info: dict[str, Any] = {}
        self.database_url = ""
        self._pg_admin_url = ""
        self._pg_name = ""

    # -- database ------------------------------------------------------------------------------------

    def _prepare_database(self) -> str:
        base = os.environ.get("BENCH_DATABASE_URL", "")
        if base.startswith(("postgres://", "postgresql://")):
            import psycopg

            self._pg_admin_url = base
            self._pg_name = f"bench_{self.name}"
            with psycopg.connect(base, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self._pg_name}"')
            return urlunparse(urlparse(base)._replace(path=f"/{self._pg_name}"))
        path = self.workdir / "db.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"

    def _drop_database(self) -> None:
        if not self._pg_name:
            return
        import psycopg

        with contextlib.suppress(Exception), psycopg.connect(self._pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')

    @property
    def vendor(self) -> str:
        return "postgresql" if self._pg_name else "sqlite"

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> BenchEnv:
        try:
            self._up()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for old in self.workdir.glob("worker*"):
            old.unlink()  # a worker's readiness is read from its log: never from an earlier run's
        self.database_url = self._prepare_database()
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.env = {
            "DJANGO_SETTINGS_MODULE": "egressportal.settings",
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            "DEBUG": "false",
            "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "API_THROTTLE_USER": "1000000/min",
            "API_THROTTLE_ANON": "1000000/min",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "EGRESS_RECONCILE_DISPATCH": "celery",
            # One synthetic tenant owns thousands of apps here; quotas are tested, not benchmarked.
            "EGRESS_QUOTA_APPS": "1000000",
            "EGRESS_QUOTA_ADDRESSES": "1000000",
            "EGRESS_SSH_KEY_FILE": str(self.lab_config.ssh_key_file),
            **WORKER_ENV,
            **self.extra_env,
        }
        os.environ.update(self.env)
        import django
        from django.core.management import call_command

        django.setup()
        log(f"{self.name}: migrating a fresh {self.vendor} database")
        call_command("migrate", verbosity=0, interactive=False)
        if self.want_redis:
            self.redis = RedisServer(self.redis_url, self.workdir)
            self.redis.start()
        if self.want_lab:
            self.lab = Lab(self.lab_config)
            c = self.lab_config
            log(f"{self.name}: building lab {c.prefix} (index {c.index}, {c.gateways} gateways, {c.nodes} nodes)")
            self.lab.down()  # leftovers of an earlier run that crashed
            self.lab.up()
            for _, app, node in DEMO_APPS:
                self.lab.add_app(app, node)
            from workers.lab_register import lab_register

            self.info = lab_register(self.lab, demo=True)

    def start_worker(self, *, concurrency: int = 2, beat: bool = True, **extra_env: str) -> WorkerProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **extra_env}
        worker = WorkerProcess(env, self.workdir, f"worker{len(self.workers) + 1}")
        self.workers.append(worker)
        log(f"{self.name}: starting {worker.name} (concurrency {concurrency})")
        return worker.start(beat=beat, concurrency=concurrency)

    def start_prober(self, **extra_env: str) -> ProberProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO", **extra_env}
        n = sum(isinstance(w, ProberProcess) for w in self.workers) + 1
        prober = ProberProcess(env, self.workdir, f"prober{n}")
        self.workers.append(prober)
        log(f"{self.name}: starting {prober.name}")
        return prober.start()

    def stop_workers(self) -> None:
        for worker in self.workers:
            with contextlib.suppress(Exception):
                worker.stop()
        self.workers = []

    def close(self) -> None:
        self.stop_workers()
        with contextlib.suppress(Exception):
            from workers.ssh import close_all_sessions

            close_all_sessions()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if self.redis:
            self.redis.stop()
        if self.lab:
            try:
                self.lab.down()
            except Exception as exc:  # report, but let the rest of the teardown run
                log(f"{self.name}: lab down failed: {exc}")
        self._drop_database()


def analyze() -> None:
    """Refresh the database's planner statistics after a bulk setup, as autovacuum does on its own within a
    minute or so of a bulk change. Measured right after bulk inserts without it, PostgreSQL planned the
    gateway's placements lookup through the wrong index (the placements' exclusion constraint, 0.15 ms per
    app: 150 ms of a 1,000-address gateway's desired state instead of 15 ms)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bulk_apps(
    *, owner: Any, region: Any, prefix: str, cidrs: Sequence[str], nodes: Sequence[Any] = (), **fields: Any
) -> list[Any]:
    """Create many apps fast (bulk inserts, no events: setup, not the thing being measured), each placed
    at one address or CIDR of ``cidrs`` on the node of ``nodes`` whose pod CIDRs hold it (the rows the
    platform's report would write; see pod_cidrs_add). Without nodes, the apps run nowhere."""
    import ipaddress

    from django.db import connection

    from egressportal.core.models import App, Placement

    apps = App.objects.bulk_create(
        [App(owner=owner, region=region, name=f"{prefix}{i:05d}", **fields) for i in range(len(cidrs))], batch_size=1000
    )
    if connection.vendor == "sqlite" and apps and apps[0].pk is None:  # SQLite without RETURNING
        apps = list(App.objects.filter(name__startswith=prefix).order_by("name"))
    if not nodes:
        return apps
    pods = [(node, [ipaddress.IPv4Network(p) for p in node.pod_cidrs if ":" not in p]) for node in nodes]
    rows = []
    for app, cidr in zip(apps, cidrs, strict=True):
        net = ipaddress.IPv4Network(cidr)
        node = next(n for n, ps in pods if any(net.subnet_of(p) for p in ps))
        rows.append(Placement(region=region, node=node, app=app, cidr=str(net), first_int=int(net.network_address),
                              last_int=int(net.broadcast_address)))
    Placement.objects.bulk_create(rows, batch_size=1000)
    return apps


def pod_cidrs_add(node: Any, cidr: str) -> Any:
    """Give a node another pod CIDR (through the service, as an admin would): room for synthetic apps
    beyond the lab's one /24 per node. Nothing is sent from there; gateways only route it back."""
    from egressportal.core import services

    if cidr in node.pod_cidrs:
        return node
    return services.host_update(host=node, pod_cidrs=[*node.pod_cidrs, cidr])


def last_pod_cidr4(node: Any) -> Any:
    """A node's highest IPv4 pod CIDR: the block pod_cidrs_add gave it (pod CIDRs are kept sorted, IPv4 first
    and IPv6 after, so on the dual-stack lab the last one is the node's IPv6 /64)."""
    import ipaddress

    return ipaddress.IPv4Network([p for p in node.pod_cidrs if ":" not in p][-1])


def subnets(cidr: str, prefixlen: int, count: int) -> list[str]:
    import ipaddress
    import itertools

    return [str(n) for n in itertools.islice(ipaddress.IPv4Network(cidr).subnets(new_prefix=prefixlen), count)]
