"""A gateway that dies outright (power loss: every link, management included), the prober's verdict by
silence, failover from the prober, failback gated on repair, the sshd-stopped policy, a late probe, and a
killed prober. Real lab, real probers and workers (workers/prober.py; docs/OPERATIONS.md, "Failover").

Timings here only guard regressions with a wide margin; the targets are measured by bench/failover.py."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
from django.utils import timezone

from egressportal.core import services
from egressportal.core.models import App, EgressIP, Event, Gateway
from tests.integration.test_failover import TrafficLoop
from tests.integration.worker_fixtures import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.worker]


def _enabled(app_name: str):
    app = App.objects.get(name=app_name)
    services.egress_enable(app=app)
    wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "assigned", timeout=30, what="assigned")
    active = EgressIP.objects.select_related("gateway").get(app=app, role="active")
    standby = EgressIP.objects.select_related("gateway").get(app=app, role="standby")
    wait_for(lambda: Gateway.objects.filter(health="healthy").count() == 2, timeout=15, what="gateways healthy")
    return app, active, standby


def _lost(loop: TrafficLoop, since: float, until: float) -> list[float]:
    return [t for t, seen in loop.samples if since <= t <= until and seen is None]


def test_dead_gateway_fails_over_and_fails_back_after_a_flush_without_a_lost_request(lab, start_worker):
    # No sweep during the test: the repair before failback must come from the prober, not from luck.
    start_worker(EGRESS_SWEEP_SECONDS="600")
    app, active, standby = _enabled("shop-api")
    loop = TrafficLoop(lab, "shop-api")
    loop.start()
    try:
        wait_for(lambda: loop.first_after(time.monotonic() - 0.2, active.address), timeout=5, what="traffic")
        died, died_wall = time.monotonic(), timezone.now()
        lab.power_off(active.gateway.name)
        wait_for(lambda: loop.first_after(died, standby.address), timeout=10, interval=0.05, what="standby traffic")
        took = loop.first_after(died, standby.address) - died
        print(f"power loss: traffic on the standby address after {took:.2f} s")
        gateway = Gateway.objects.get(pk=active.gateway_id)
        assert gateway.health == "unhealthy" and "no answer" in gateway.health_message
        wait_for(lambda: App.objects.get(pk=app.pk).egress_status == "degraded", timeout=5, what="degraded")
        assert standby.address in App.objects.get(pk=app.pk).egress_message
        time.sleep(1)

        # Back, empty: no rule, address or route of ours. Repaired first, then traffic returns.
        back = time.monotonic()
        lab.power_on(active.gateway.name, empty=True)
        wait_for(lambda: loop.first_after(back, active.address), timeout=15, interval=0.05, what="failback")
        returned = loop.first_after(back, active.address)
        print(f"back: traffic on the active address {returned - back:.2f} s after power came back")
        time.sleep(2)
    finally:
        loop.stop()
    lost = _lost(loop, back, loop.samples[-1][0])
    assert lost == [], f"{len(lost)} requests lost around failback"
    after = [seen for t, seen in loop.samples if t > returned + 0.3]
    assert after and set(after) == {active.address}
    assert App.objects.get(pk=app.pk).egress_status == "assigned"
    events = list(
        Event.objects.filter(gateway=active.gateway, created_at__gte=died_wall)
        .filter(kind__in=["gateway.unhealthy", "gateway.healthy", "gateway.reconciled"])
        .order_by("created_at")
        .values_list("kind", flat=True)
    )
    # From the failure on (the first "healthy" of a fresh start may be written later than the health itself):
    # repaired (reconciled) before it was called healthy; one down, one up.
    events = events[events.index("gateway.unhealthy"):]
    assert events.count("gateway.unhealthy") == 1 and events.count("gateway.healthy") == 1, events
    assert "gateway.reconciled" in events[events.index("gateway.unhealthy"):events.index("gateway.healthy")], events
    assert took < 5


def test_sshd_stopped_keeps_traffic_on_the_gateway_and_loses_nothing(lab, worker):
    app, active, standby = _enabled("shop-api")
    loop = TrafficLoop(lab, "shop-api")
    loop.start()
    try:
        wait_for(lambda: loop.first_after(time.monotonic() - 0.2, active.address), timeout=5, what="traffic")
        stopped, stopped_wall = time.monotonic(), timezone.now()
        lab.stop_sshd(active.gateway.name)
        wait_for(lambda: "management unreachable" in Gateway.objects.get(pk=active.gateway_id).health_message,
                 timeout=5, what="management outage shown")
        time.sleep(3)
        gateway = Gateway.objects.get(pk=active.gateway_id)
        assert gateway.health == "healthy", gateway.health_message
        lab.start_sshd(active.gateway.name)
        wait_for(lambda: Gateway.objects.get(pk=active.gateway_id).health_message == "", timeout=10,
                 what="management back")
    finally:
        loop.stop()
    seen = [s for t, s in loop.samples if t >= stopped]
    assert seen and set(seen) == {active.address}, "a request was lost or moved while only sshd was down"
    assert not Event.objects.filter(kind="gateway.unhealthy", created_at__gte=stopped_wall).exists()


def test_a_late_probe_is_not_a_failover(lab, worker):
    app, active, standby = _enabled("shop-api")
    since = timezone.now()
    lab.pause(active.gateway.name, 0.3)  # every process of the host, sshd's sessions included, 300 ms late
    time.sleep(2)
    assert not Event.objects.filter(kind="gateway.unhealthy", created_at__gte=since).exists()
    assert Gateway.objects.get(pk=active.gateway_id).health == "healthy"
    assert lab.seen_ip("shop-api") == active.address
    # The same host silent for longer than EGRESS_PROBE_DEAD_AFTER is judged down: the detector is live.
    lab.pause(active.gateway.name, 1.2)
    wait_for(lambda: Event.objects.filter(kind="gateway.unhealthy", created_at__gte=since).exists(), timeout=5,
             what="a silent gateway judged down")


def test_prober_killed_before_the_gateway_dies(lab, start_worker):
    start_worker(prober=False)
    probers = [start_worker.prober(), start_worker.prober()]
    app, active, standby = _enabled("shop-api")
    leader = wait_for(lambda: next((p for p in probers if p.leading()), None), timeout=10, what="a leading prober")
    standby_prober = next(p for p in probers if p is not leader)
    loop = TrafficLoop(lab, "shop-api")
    loop.start()
    try:
        wait_for(lambda: loop.first_after(time.monotonic() - 0.2, active.address), timeout=5, what="traffic")
        leader.kill(signal.SIGKILL)
        died = time.monotonic()
        lab.power_off(active.gateway.name)
        wait_for(lambda: loop.first_after(died, standby.address), timeout=10, interval=0.05, what="standby traffic")
        took = loop.first_after(died, standby.address) - died
        print(f"leader prober killed, then the gateway: traffic on the standby after {took:.2f} s")
    finally:
        loop.stop()
        lab.power_on(active.gateway.name, empty=False)
    assert standby_prober.leading()
    assert took < 5


def test_stopping_sshd_leaves_nothing_serving_even_when_clients_reconnect_at_once(lab):
    """The sshd-stopped test's flake: the prober's session died first, it reconnected to the listener
    before that was killed, and the child serving it was not on the list of processes to kill. Here
    clients connect as fast as they can while sshd stops: every connection they got must be closed."""
    address = lab.hosts["gw1"].mgmt_address
    held: list[socket.socket] = []
    stop = threading.Event()

    def connect_again_and_again() -> None:
        while not stop.is_set():
            try:
                held.append(socket.create_connection((address, 22), timeout=0.5))
            except OSError:
                time.sleep(0.005)

    clients = [threading.Thread(target=connect_again_and_again, daemon=True) for _ in range(4)]
    try:
        for t in clients:
            t.start()
        time.sleep(0.3)
        lab.stop_sshd("gw1")
        stop.set()
        for t in clients:
            t.join()
        assert held, "no client ever connected"
        alive = []
        for conn in held:
            conn.settimeout(1.0)
            try:
                while conn.recv(4096):  # the banner, if it came, then EOF
                    pass
            except TimeoutError:
                alive.append(conn)  # something still holds the other end open
            except OSError:
                pass  # reset: closed
        assert not alive, f"{len(alive)} of {len(held)} connections still served after sshd was stopped"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, 22), timeout=1.0).close()
    finally:
        stop.set()
        for conn in held:
            conn.close()
        lab.start_sshd("gw1")

