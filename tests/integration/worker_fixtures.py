"""Real infrastructure for worker tests: a private redis-server (so tests can
restart it), real Celery worker processes (with beat) against the test
database, and the lab registered in that database."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings as django_settings
from django.db import connection

from egressportal.celery import WORKER_QUEUES

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: object = "condition"):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    if callable(what):
        what = what()
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class RedisServer:
    def __init__(self, url: str, workdir: Path) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", self.host, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, timeout=10, what="redis-server")

    def ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class WorkerProcess:
    """``celery worker -B`` in its own process group, logging to a file."""

    def __init__(self, env: dict[str, str], logdir: Path, name: str) -> None:
        self.env = env
        self.log = logdir / f"{name}.log"
        self.name = name
        self.proc: subprocess.Popen | None = None

    def start(self, *, beat: bool = True, concurrency: int = 2) -> WorkerProcess:
        argv = [
            sys.executable, "-m", "celery", "-A", "workers.celery", "worker",
            "--loglevel", "INFO", "--concurrency", str(concurrency), "--pool", "prefork",
            "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle", "--queues", WORKER_QUEUES,
        ]
        if beat:
            argv += ["--beat", "--schedule", str(self.log.with_suffix(".beat"))]
        self.logfile = open(self.log, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: b"ready." in self.log.read_bytes() or self.proc.poll() is not None, timeout=30,
                 what="celery worker ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited early:\n{self.log.read_text()[-3000:]}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "logfile", None):
            self.logfile.close()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class ProberProcess(WorkerProcess):
    """``manage.py prober`` (workers/prober.py) in its own process group."""

    def start(self, **_: object) -> ProberProcess:
        argv = [sys.executable, "manage.py", "prober", "--name", self.name]
        self.logfile = open(self.log, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=self.logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(lambda: b"ready." in self.log.read_bytes() or self.proc.poll() is not None, timeout=30,
                 what="prober ready")
        if self.proc.poll() is not None:
            raise AssertionError(f"prober exited early:\n{self.log.read_text()[-3000:]}")
        return self

    def leading(self) -> bool:
        return b" leads: " in self.log.read_bytes() if self.log.exists() else False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(django_settings.CELERY_BROKER_URL, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def lab_world(clean_lab, transactional_db, settings):
    """The lab registered in the (transactional) test database, with clean hosts."""
    from workers.lab_register import lab_register

    lab = clean_lab
    info = lab_register(lab, demo=True)
    settings.EGRESS_SSH_KEY_FILE = str(lab.config.ssh_key_file)
    return info


@pytest.fixture
def start_worker(lab_world, lab, redis_server, settings, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes against the test database and the private Redis."""
    settings.EGRESS_RECONCILE_DISPATCH = "celery"
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        url = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        url = f"sqlite:///{db['NAME']}"
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=url,
        REDIS_URL=django_settings.CELERY_BROKER_URL,
        EGRESS_RECONCILE_DISPATCH="celery",
        EGRESS_SSH_KEY_FILE=str(lab.config.ssh_key_file),
        PYTHONUNBUFFERED="1",
    )
    workers: list[WorkerProcess] = []

    def start(*, beat: bool = True, concurrency: int = 2, prober: bool | None = None, **extra_env: str) -> WorkerProcess:
        """A worker; with beat (the control plane), also a prober unless ``prober=False``."""
        w = WorkerProcess({**env, **extra_env}, tmp_path, f"worker{len(workers) + 1}")
        workers.append(w)
        w.start(beat=beat, concurrency=concurrency)
        if prober if prober is not None else beat:
            start_prober(**extra_env)
        return w

    def start_prober(**extra_env: str) -> ProberProcess:
        p = ProberProcess({**env, **extra_env}, tmp_path, f"prober{sum(isinstance(x, ProberProcess) for x in workers) + 1}")
        workers.append(p)
        return p.start()

    start.prober = start_prober  # type: ignore[attr-defined]

    yield start
    for w in workers:
        w.stop()
    logs = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))
    logs.mkdir(exist_ok=True)
    test_id = os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0].replace("/", "_").replace(":", "_")
    for w in workers:
        if w.log.exists():
            shutil.copy(w.log, logs / f"{test_id}-{w.name}.log")


@pytest.fixture
def worker(start_worker) -> WorkerProcess:
    return start_worker()
