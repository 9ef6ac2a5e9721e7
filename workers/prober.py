"""The prober: detects a dead host in well under a second and moves traffic at once.

Run as its own process (``python manage.py prober``), two or more of them: each one watches every enabled
host, and the one holding the leader lock (a PostgreSQL advisory lock on its own connection, released by the
server the moment the holder's connection dies; a file lock beside an SQLite database) judges and acts.
The others are hot standbys with warm sessions and current observations: when the leader dies, the next
one takes the lock within a tick and acts on what it already saw. Nothing here goes through Redis or
Celery, so a broker restart does not delay a failover.

Per host, one thread keeps an SSH session with an echo channel open (``dataplane.probe_echo_command``)
and sends a byte every ``EGRESS_PROBE_INTERVAL``; each echoed byte is an answer. Without a session it
tries a TCP connection each interval: a refused one is also an answer (the kernel runs; only sshd is gone).
A gateway's links are read over the same session every ``EGRESS_PROBE_LINKS_SECONDS``. Nothing waits for
a TCP or SSH timeout to decide: the verdict is silence (rules/health.py ``liveness_verdict``), evaluated
per host every tick, so a dead or slow host never delays the verdict on another.

Acting (leader only, one action per host at a time, hosts in parallel):
- a gateway turns unhealthy: recorded, then every node of its region is reconciled now, in parallel, from
  this process (one transaction per node): the nodes steer to the standby;
- a gateway answers again: it stays unhealthy until it has answered steadily, shown its links up, and been
  reconciled and verified (a rebooted gateway comes back empty); only then is it healthy and are the
  nodes reconciled back to it;
- a gateway whose session was re-opened (it may have rebooted faster than it was judged dead) is
  reconciled at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import select
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connections

from egressportal.core.models import Gateway, HealthStatus, Node
from egressportal.core.rules.health import Liveness, ProbeResult, Verdict, gateway_link_health, liveness_verdict
from egressportal.core.services.hosthealth import failover_nodes, health_changed, health_seen, health_set
from egressportal.core.services.reconcile import reconcile_request
from egressportal.dataplane import DataplaneValueError, probe_echo_command, probe_gateway_links_command

from .reconcile import HostBusy, host_reconcile, host_session
from .ssh import HostKeyMismatch, SSHError

__all__ = ["HostWatch", "LeaderLock", "Prober", "prober_run"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]


class HostWatch:
    """What one prober sees of one host: answers, silence and (for a gateway) its links."""

    def __init__(self, host: Gateway | Node) -> None:
        self.host = host
        self.key: Key = (host.kind, host.pk)
        self.gateway = isinstance(host, Gateway)
        self.interval = settings.EGRESS_PROBE_INTERVAL
        self.dead_after = settings.EGRESS_PROBE_DEAD_AFTER
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.started = time.monotonic()
        self.last_answer: float | None = None
        self.streak_start: float | None = None
        self.unanswered = 0
        self.links: ProbeResult | None = None
        self.management = ""
        self.sessions_opened = 0
        self.reopened = False  # a session was opened again after one had been: the host may have rebooted
        self._threads = [threading.Thread(target=self._echo_loop, name=f"probe-{host.name}", daemon=True)]
        if self.gateway:
            self._threads.append(threading.Thread(target=self._links_loop, name=f"links-{host.name}", daemon=True))

    def start(self) -> HostWatch:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    # -- what was seen --------------------------------------------------------------------------------

    def _answered(self, *, management: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            if self.last_answer is None or now - self.last_answer >= self.dead_after:
                self.streak_start = now
            self.last_answer = now
            self.unanswered = 0
            if management is not None:
                self.management = management

    def _sent(self, n: int = 1) -> None:
        with self._lock:
            self.unanswered += n

    def liveness(self, now: float) -> Liveness:
        with self._lock:
            silent = now - (self.last_answer if self.last_answer is not None else self.started)
            steady = self.streak_start is not None and silent < self.dead_after
            return Liveness(
                silent_for=silent,
                unanswered=self.unanswered,
                answering_for=now - self.streak_start if steady and self.streak_start is not None else 0.0,
                links=self.links if self.gateway else None,
                management=self.management,
            )

    def take_reopened(self) -> bool:
        with self._lock:
            was, self.reopened = self.reopened, False
            return was

    # -- the echo channel -----------------------------------------------------------------------------

    def _echo_loop(self) -> None:
        while not self._stop.is_set():
            chan = self._open()
            if chan is None:
                self._stop.wait(self.interval)
                continue
            try:
                self._echo(chan)
            except (OSError, EOFError, SSHError, Exception) as exc:
                logger.debug("echo channel to %s broke: %s", self.host.name, exc)
            finally:
                with contextlib.suppress(Exception):
                    chan.close()
            # The connection may be dead while paramiko still thinks it is up: start again from TCP.
            with contextlib.suppress(Exception):
                host_session(self.host).close()
            with self._lock:
                self.links = None

    def _open(self):  # -> paramiko.Channel | None
        started = time.monotonic()
        timeout = settings.EGRESS_PROBE_CONNECT_TIMEOUT
        try:
            # A bare TCP connect first: its answer (or a refusal) comes in one round trip, before any SSH.
            with socket.create_connection((self.host.mgmt_address, self.host.ssh_port), timeout=timeout):
                pass
        except ConnectionRefusedError:
            self._answered(management="connection refused on the SSH port")
            return None
        except OSError:
            self._sent(1 + int((time.monotonic() - started) / self.interval))
            return None
        self._answered()
        try:
            session = host_session(self.host)
            chan = session.open_stream(probe_echo_command())
        except HostKeyMismatch:
            self._answered(management="SSH host key mismatch")
            return None
        except (SSHError, OSError, EOFError) as exc:
            self._sent(1 + int((time.monotonic() - started) / self.interval))
            with self._lock:
                self.management = f"SSH failed: {str(exc)[:120]}"
            return None
        with self._lock:
            self.management = ""
            self.reopened = self.sessions_opened > 0
            self.sessions_opened += 1
        return chan

    def _echo(self, chan) -> None:
        chan.setblocking(False)
        fd = chan.fileno()
        next_send = time.monotonic()
        give_up = max(2.0, 4 * self.dead_after)
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_send:
                chan.send(b".")
                self._sent()
                next_send = now + self.interval
            ready, _, _ = select.select([fd], [], [], max(0.0, next_send - time.monotonic()))
            if ready:
                if chan.recv_ready():
                    if not chan.recv(4096):
                        return
                    self._answered()
                elif chan.closed or chan.eof_received:
                    return
            if chan.closed or chan.exit_status_ready():
                return
            with self._lock:
                last = self.last_answer or self.started
            if time.monotonic() - last > give_up:
                return  # dead for a while: reconnect attempts (cheap TCP) take over

    def _links_loop(self) -> None:
        every = settings.EGRESS_PROBE_LINKS_SECONDS
        while not self._stop.wait(every):
            with self._lock:
                usable = self.sessions_opened > 0 and not self.management and self.last_answer is not None
            if not usable:
                continue
            try:
                out = host_session(self.host).run(
                    probe_gateway_links_command(), timeout=max(1.0, 2 * self.dead_after)
                )
            except (SSHError, OSError, EOFError):
                continue  # silence is the echo channel's to judge
            result = gateway_link_health(out.stdout, self.host.public_interface, self.host.transit_address)
            with self._lock:
                self.links = result


class LeaderLock:
    """One leader among the probers: a PostgreSQL advisory lock held on a connection of its own (the server
    drops it the moment that connection dies, so a killed leader is replaced within a tick), or an
    exclusive file lock beside an SQLite database (one machine, as SQLite is)."""

    KEY = zlib.crc32(b"egressportal.prober")

    def __init__(self) -> None:
        self.held = False
        self._conn = None
        self._file = None
        self._checked = 0.0

    def hold(self) -> bool:
        try:
            if connections["default"].vendor == "postgresql":
                return self._hold_pg()
            return self._hold_file()
        except Exception as exc:
            logger.warning("prober leader lock lost: %s", exc)
            self.release()
            return False

    def _hold_pg(self) -> bool:
        now = time.monotonic()
        if self._conn is None:
            self._conn = connections.create_connection("default")
        if not self.held:
            with self._conn.cursor() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", [self.KEY])
                self.held = bool(cur.fetchone()[0])
            self._checked = now
        elif now - self._checked >= 1.0:
            with self._conn.cursor() as cur:  # still connected, so still holding it
                cur.execute("SELECT 1")
            self._checked = now
        return self.held

    def _hold_file(self) -> bool:
        if self.held:
            return True
        if self._file is None:
            path = Path(settings.EGRESS_PROBER_LOCK_FILE)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        return True

    def release(self) -> None:
        self.held = False
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None


class Prober:
    TICK = 0.02

    def __init__(self, name: str = "prober") -> None:
        self.name = name
        self.watches: dict[Key, HostWatch] = {}
        self.health: dict[Key, str] = {}
        self.messages: dict[Key, str] = {}
        self.inflight: set[Key] = set()
        self.retry_at: dict[Key, float] = {}
        self._inflight_lock = threading.Lock()
        self.actions = ThreadPoolExecutor(max_workers=16, thread_name_prefix="act")
        self.resteers = ThreadPoolExecutor(max_workers=settings.EGRESS_PROBER_RECONCILE_THREADS, thread_name_prefix="steer")
        self.leader = LeaderLock()
        self.leading = False
        self.stopped = threading.Event()

    def hosts_refresh(self, *, reload: bool = False) -> None:
        hosts: list[Gateway | Node] = list(Gateway.objects.filter(enabled=True)) + list(Node.objects.filter(enabled=True))
        seen: set[Key] = set()
        for host in hosts:
            key = (host.kind, host.pk)
            seen.add(key)
            watch = self.watches.get(key)
            changed = watch is not None and (
                watch.host.mgmt_address, watch.host.ssh_port, watch.host.host_key, watch.host.ssh_private_key_encrypted
            ) != (host.mgmt_address, host.ssh_port, host.host_key, host.ssh_private_key_encrypted)
            if watch is None or changed:
                if watch is not None:
                    watch.stop()
                self.watches[key] = HostWatch(host).start()
            if key not in self.inflight and (reload or not self.leading or key not in self.health):
                self.health[key] = host.health
                self.messages[key] = host.health_message
        for key in set(self.watches) - seen:
            self.watches.pop(key).stop()
            self.health.pop(key, None)

    def run(self) -> None:
        refresh_every, seen_every = 2.0, 1.0
        next_refresh = next_seen = 0.0
        while not self.stopped.is_set():
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    self.hosts_refresh()
                    next_refresh = now + refresh_every
                leading = self.leader.hold()
                if leading and not self.leading:
                    logger.info("prober %s leads: judging and acting on %d hosts", self.name, len(self.watches))
                    self.leading = True
                    # What the database says now (the last leader may have acted since our last read), and
                    # every node steered once as it says: a leader killed half-way through a failover
                    # leaves nothing undone.
                    self.hosts_refresh(reload=True)
                    self.actions.submit(self.resteer_all)
                self.leading = leading
                if leading:
                    self.judge(now)
                    if now >= next_seen:
                        self.seen_mark(now)
                        next_seen = now + seen_every
            except Exception:
                logger.exception("prober loop")
                close_old_connections()
                time.sleep(0.5)
            self.stopped.wait(self.TICK)
        self.shutdown()

    def judge(self, now: float) -> None:
        for key, watch in list(self.watches.items()):
            if key in self.inflight or self.retry_at.get(key, 0.0) > now:
                continue
            current = self.health.get(key, HealthStatus.UNKNOWN)
            verdict = liveness_verdict(
                health=current,
                live=watch.liveness(now),
                gateway=watch.gateway,
                dead_after=settings.EGRESS_PROBE_DEAD_AFTER,
                recover_after=settings.EGRESS_PROBE_RECOVER_AFTER,
                min_unanswered=settings.EGRESS_PROBE_MIN_UNANSWERED,
            )
            reopened = watch.gateway and current == HealthStatus.HEALTHY and watch.take_reopened()
            # A healthy verdict's message is the whole truth ("" clears an old one); an unhealthy host keeps
            # its recorded reason unless the verdict has a new one.
            says = bool(verdict.message) or verdict.health == HealthStatus.HEALTHY
            news = verdict.health != current or (says and verdict.message != self.messages.get(key, ""))
            if news or reopened:
                with self._inflight_lock:
                    self.inflight.add(key)
                self.actions.submit(self._act, key, watch, verdict, reopened)

    def seen_mark(self, now: float) -> None:
        answering: dict[str, list[int]] = {Gateway.kind: [], Node.kind: []}
        for (kind, pk), watch in self.watches.items():
            if watch.liveness(now).silent_for < settings.EGRESS_PROBE_DEAD_AFTER:
                answering[kind].append(pk)
        for kind, pks in answering.items():
            if pks:
                health_seen(kind, pks, answered=True)

    def _act(self, key: Key, watch: HostWatch, verdict: Verdict, reopened: bool) -> None:
        kind, pk = key
        try:
            host = (Gateway if kind == Gateway.kind else Node).objects.select_related("region").get(pk=pk)
            if reopened and verdict.health == HealthStatus.HEALTHY:
                # It may have rebooted between two probes: whatever it lost is put back now, not at the sweep.
                self.reconcile_now(Gateway.kind, pk)
            if verdict.repair_first and host.health != HealthStatus.HEALTHY:
                health_set(host, health=host.health, message="answering again; being repaired before traffic returns")
                if not self.reconcile_now(Gateway.kind, pk):
                    health_set(host, health=host.health, message="answering again, but the repair failed; retrying")
                    self.retry_at[key] = time.monotonic() + 0.5
                    return
            message = verdict.message if verdict.message or verdict.health == HealthStatus.HEALTHY else None
            changed = health_set(host, health=verdict.health, message=message)
            self.health[key] = verdict.health
            self.messages[key] = host.health_message
            if changed:
                if isinstance(host, Gateway):
                    self.resteer(host)  # traffic first; the events and the apps' status right after
                health_changed(host, resteer=False)
        except Exception:
            logger.exception("acting on %s %s", kind, pk)
            self.retry_at[key] = time.monotonic() + 0.5
        finally:
            close_old_connections()
            with self._inflight_lock:
                self.inflight.discard(key)

    def resteer(self, gateway: Gateway) -> None:
        """Failover or failback: every node re-steered now, in parallel, one transaction each."""
        started = time.monotonic()
        candidates = failover_nodes(gateway)
        # A node that is not answering right now (dead at the same time, say) would hold this up for an SSH
        # timeout: it is left to the workers' retries and the sweep; the others move now.
        nodes = [pk for pk in candidates if self.answering((Node.kind, pk), started)]
        done = list(self.resteers.map(lambda pk: self.reconcile_now(Node.kind, pk), nodes))
        left = [pk for pk, ok in zip(nodes, done, strict=True) if not ok] + [pk for pk in candidates if pk not in nodes]
        if left:
            reconcile_request(nodes=left)  # the workers' retries and the sweep finish the job
        logger.info(
            "gateway %s %s: %d nodes re-steered in %.0f ms (%d left to the workers)",
            gateway.name, gateway.health, len(nodes) - len(left), (time.monotonic() - started) * 1000, len(left),
        )

    def resteer_all(self) -> None:
        try:
            now = time.monotonic()
            nodes = [pk for (kind, pk) in list(self.watches) if kind == Node.kind and self.answering((kind, pk), now)]
            list(self.resteers.map(lambda pk: self.reconcile_now(Node.kind, pk), nodes))
        except Exception:
            logger.exception("re-steering the nodes after taking the lead")
        finally:
            close_old_connections()

    def answering(self, key: Key, now: float) -> bool:
        watch = self.watches.get(key)
        return watch is not None and watch.liveness(now).silent_for < 0.6 * settings.EGRESS_PROBE_DEAD_AFTER

    @staticmethod
    def reconcile_now(kind: str, pk: int, *, patience: float = 2.0) -> bool:
        deadline = time.monotonic() + patience
        try:
            while True:
                try:
                    host_reconcile(kind=kind, pk=pk)
                    return True
                except HostBusy:
                    if time.monotonic() > deadline:
                        return False
                    time.sleep(0.03)
                except (SSHError, DataplaneValueError, OSError) as exc:
                    logger.info("reconcile of %s %s from the prober failed: %s", kind, pk, exc)
                    return False
        finally:
            close_old_connections()

    def shutdown(self) -> None:
        for watch in self.watches.values():
            watch.stop()
        self.leader.release()
        self.actions.shutdown(wait=False, cancel_futures=True)
        self.resteers.shutdown(wait=False, cancel_futures=True)


def prober_run(name: str, *, on_ready: Callable[[Prober], None] | None = None) -> None:
    """Run a prober until SIGTERM or SIGINT."""
    prober = Prober(name)

    def _stop(*_: object) -> None:
        prober.stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if on_ready:
        on_ready(prober)
    prober.run()
