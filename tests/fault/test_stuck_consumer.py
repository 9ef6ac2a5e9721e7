"""A worker that stops consuming while its queue grows is detected and replaced.

The fault: Redis restarts while the worker's connections go half-open (a NAT or load balancer between
them lost its state with the restart), so the worker never hears of the restart: its event loop and its
heartbeat go on, its consumer waits forever on a dead connection (what the kombu bug in
docs/OPERATIONS.md also looks like from outside). The consumption watch (egressportal/ops/worker.py)
sees messages waiting while none is received, and the worker exits with code 75 for its supervisor
(here: the test) to start a fresh one, which does the work."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

import pytest
from django.conf import settings as django_settings

from egressportal.core import services
from egressportal.core.models import App
from egressportal.ops.worker import STUCK_EXIT_CODE
from tests.integration.worker_fixtures import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.lab, pytest.mark.worker]


class HalfOpenProxy:
    """A TCP relay to Redis; ``sever()`` drops the upstream side of every open relay without a word to the
    clients: their sockets stay open and silent. New connections are relayed as before."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            up.settimeout(None)
            dead = threading.Event()
            with self.lock:
                self.pairs.append((client, up, dead))
            threading.Thread(target=self._pump, args=(client, up, dead), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, dead), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, dead: threading.Event) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                if not dead.is_set():
                    dst.close()  # an ordinary close is relayed
                return
            if dead.is_set():
                continue  # severed: swallowed, never answered
            try:
                dst.sendall(data)
            except OSError:
                return

    def sever(self) -> None:
        with self.lock:
            for _client, up, dead in self.pairs:
                dead.set()
                up.close()  # the client socket stays open: half-open from the client's side
            self.pairs = []

    def close(self) -> None:
        self.listener.close()


def test_a_worker_stuck_after_a_redis_restart_exits_and_its_replacement_does_the_work(start_worker, redis_server):
    parsed = urlparse(django_settings.CELERY_BROKER_URL)
    proxy = HalfOpenProxy((parsed.hostname or "127.0.0.1", parsed.port or 6379))
    url = f"redis://127.0.0.1:{proxy.port}{parsed.path or '/0'}"
    knobs = {"REDIS_URL": url, "EGRESS_WORKER_HEARTBEAT_SECONDS": "0.5", "EGRESS_WORKER_STUCK_SECONDS": "3",
             "EGRESS_SWEEP_SECONDS": "600"}
    try:
        worker = start_worker(beat=False, prober=False, **knobs)
        shop = App.objects.get(name="shop-api")
        services.egress_enable(app=shop)
        wait_for(lambda: App.objects.get(pk=shop.pk).egress_status == "assigned", timeout=30, what="consuming")

        redis_server.restart()
        proxy.sever()
        billing = App.objects.get(name="billing")
        services.egress_enable(app=billing)  # its message waits in Redis; the worker takes none
        code = wait_for(lambda: worker.proc.poll(), timeout=30, what="the stuck worker to exit")
        assert code == STUCK_EXIT_CODE, worker.tail()
        assert "stopped consuming" in worker.tail()
        assert App.objects.get(pk=billing.pk).egress_status == "assigning"

        start_worker(beat=False, prober=False, **knobs)  # what its supervisor does
        wait_for(lambda: App.objects.get(pk=billing.pk).egress_status == "assigned", timeout=30,
                 what="the fresh worker does the work")
    finally:
        proxy.close()
