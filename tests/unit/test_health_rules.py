"""Health evaluation and the app's settle steps on plain values (egressportal/core/rules/health.py and
settle.py): no database, no host."""

from __future__ import annotations

import json

import pytest

from egressportal.core.models import EgressStatus, HealthStatus
from egressportal.core.rules import states
from egressportal.core.rules.health import (
    AppAddress,
    Liveness,
    ProbeResult,
    app_egress_health,
    gateway_link_health,
    liveness_verdict,
)
from egressportal.core.rules.settle import GATEWAYS_READY, NODES_DONE, SettleStep, settle_step

OK = ProbeResult(True, True, "")
DOWN = ProbeResult(False, True, "public interface eth1 is down")  # the host answered: definitive
LOST = ProbeResult(False, False, "unreachable: timed out")  # no answer: may be a blip


def test_state_words_are_the_models_choices():
    assert {HealthStatus.UNKNOWN, HealthStatus.HEALTHY, HealthStatus.UNHEALTHY} == {
        states.UNKNOWN, states.HEALTHY, states.UNHEALTHY
    }
    assert EgressStatus.DEGRADED == states.DEGRADED and EgressStatus.RELEASING == states.RELEASING


# -- a gateway's links ---------------------------------------------------------------------------


def links(*, public="UP", transit="UP", transit_addr="198.18.32.1", public_flags=("UP",)):
    return json.dumps(
        [
            {"ifname": "lo", "operstate": "UNKNOWN", "flags": ["LOOPBACK", "UP"], "addr_info": [{"local": "127.0.0.1"}]},
            {"ifname": "eth1", "operstate": public, "flags": list(public_flags), "addr_info": [{"local": "203.0.113.2"}]},
            {"ifname": "eth2", "operstate": transit, "flags": ["UP"], "addr_info": [{"local": transit_addr}]},
        ]
    )


def test_gateway_links_up_is_healthy():
    assert gateway_link_health(links(), "eth1", "198.18.32.1") == ProbeResult(True, True, "")


@pytest.mark.parametrize(
    ("output", "iface", "message"),
    [
        (links(public="DOWN"), "eth1", "public interface eth1 is down"),
        (links(public_flags=("BROADCAST",)), "eth1", "public interface eth1 is down"),
        (links(), "eth9", "public interface eth9 is missing"),
        (links(transit_addr="198.18.32.9"), "eth1", "transit address 198.18.32.1 is not configured"),
        (links(transit="LOWERLAYERDOWN"), "eth1", "transit interface eth2 is down"),
        ("not json", "eth1", "the gateway returned unreadable interface data"),
    ],
)
def test_gateway_links_down_is_a_definitive_failure(output, iface, message):
    assert gateway_link_health(output, iface, "198.18.32.1") == ProbeResult(False, True, message)


# -- the app's status from its gateways' health ---------------------------------------------------


def addr(address, *, active, gateway, down=False):
    return AppAddress(address, active, gateway, down)


def test_app_with_healthy_gateways_is_assigned():
    ips = [addr("203.0.113.130", active=True, gateway="gw1"), addr("203.0.113.131", active=False, gateway="gw2")]
    assert app_egress_health(ips, ips_per_app=2) == (states.ASSIGNED, "")


def test_app_whose_active_gateway_is_down_is_degraded_and_names_the_standby():
    ips = [addr("203.0.113.130", active=True, gateway="gw1", down=True), addr("203.0.113.131", active=False, gateway="gw2")]
    assert app_egress_health(ips, ips_per_app=2) == (
        states.DEGRADED,
        "Gateway gw1 is down; traffic leaves from the standby address 203.0.113.131.",
    )


def test_app_with_every_gateway_down_is_degraded():
    ips = [
        addr("203.0.113.130", active=True, gateway="gw1", down=True),
        addr("203.0.113.131", active=False, gateway="gw2", down=True),
    ]
    status, message = app_egress_health(ips, ips_per_app=2)
    assert status == states.DEGRADED and message.startswith("Every gateway of this app is down")


def test_app_whose_standby_is_down_is_assigned_without_failover():
    ips = [addr("203.0.113.130", active=True, gateway="gw1"), addr("203.0.113.131", active=False, gateway="gw2", down=True)]
    assert app_egress_health(ips, ips_per_app=2) == (
        states.ASSIGNED, "Standby gateway gw2 is down; no failover until it recovers."
    )


def test_app_with_fewer_addresses_than_wanted_is_assigned_with_reduced_redundancy():
    ips = [addr("203.0.113.130", active=True, gateway="gw1")]
    status, message = app_egress_health(ips, ips_per_app=2)
    assert status == states.ASSIGNED and message.startswith("Redundancy is reduced")
    assert app_egress_health(ips, ips_per_app=1) == (states.ASSIGNED, "")


def test_app_without_addresses_failed():
    assert app_egress_health([], ips_per_app=2)[0] == states.FAILED


# -- settle steps --------------------------------------------------------------------------------


def test_settle_enabling_waits_for_the_gateways_then_asks_the_nodes():
    waiting = settle_step(dedicated=True, status=states.ASSIGNING, message="", gateways_left={1}, nodes_left={7})
    assert waiting == SettleStep()
    ready = settle_step(dedicated=True, status=states.ASSIGNING, message="", gateways_left=set(), nodes_left={7, 8})
    assert ready == SettleStep(states.ASSIGNING, GATEWAYS_READY, follow_nodes=frozenset({7, 8}))
    # A failed attempt that the gateways now caught up with goes on the same way.
    retried = settle_step(dedicated=True, status=states.FAILED, message="x", gateways_left=set(), nodes_left={7})
    assert retried.status == states.ASSIGNING and retried.follow_nodes == {7}


def test_settle_enabled_app_with_nothing_left_follows_its_gateways_health():
    done = settle_step(dedicated=True, status=states.ASSIGNING, message="", gateways_left=set(), nodes_left=set())
    assert done == SettleStep(from_health=True)
    # An assigned app that a node still owes a re-steer (failover) keeps its status meanwhile.
    assert settle_step(
        dedicated=True, status=states.ASSIGNED, message="", gateways_left=set(), nodes_left={7}
    ) == SettleStep()


def test_settle_disabling_nodes_first_then_gateways_then_release():
    nodes_first = settle_step(dedicated=False, status=states.RELEASING, message="", gateways_left={1}, nodes_left={7})
    assert nodes_first == SettleStep()  # the gateways are not asked while a node may still steer
    gateways = settle_step(dedicated=False, status=states.RELEASING, message="", gateways_left={1, 2}, nodes_left=set())
    assert gateways == SettleStep(states.RELEASING, NODES_DONE, follow_gateways=frozenset({1, 2}))
    again = settle_step(dedicated=False, status=states.RELEASING, message=NODES_DONE, gateways_left={1}, nodes_left=set())
    assert again == SettleStep(follow_gateways=frozenset({1}))
    done = settle_step(dedicated=False, status=states.RELEASING, message=NODES_DONE, gateways_left=set(), nodes_left=set())
    assert done == SettleStep(release=True)


# -- liveness_verdict: the prober's judgement by silence (workers/prober.py) -------------------------------

KNOBS = {"dead_after": 0.5, "recover_after": 1.0, "min_unanswered": 3}
LINKS_OK = ProbeResult(True, True, "")


def verdict(health: str, live: Liveness, *, gateway: bool = True):
    return liveness_verdict(health=health, live=live, gateway=gateway, **KNOBS)


def test_liveness_a_host_silent_past_dead_after_is_unhealthy_at_once():
    v = verdict("healthy", Liveness(silent_for=0.55, unanswered=5, answering_for=0.0, links=LINKS_OK))
    assert v.health == "unhealthy" and "no answer for 550 ms" in v.message


def test_liveness_one_late_probe_is_not_an_outage():
    # One answer 300 ms late: silent below dead_after, whatever the count.
    assert verdict("healthy", Liveness(silent_for=0.3, unanswered=3, answering_for=0.0, links=LINKS_OK)).health == "healthy"
    # Silent long enough, but fewer probes than min_unanswered went out (the prober itself stalled).
    assert verdict("healthy", Liveness(silent_for=0.9, unanswered=2, answering_for=0.0, links=LINKS_OK)).health == "healthy"


def test_liveness_a_gateway_reporting_a_link_down_is_unhealthy_without_waiting():
    down = ProbeResult(False, True, "public interface eth1 is down")
    v = verdict("healthy", Liveness(silent_for=0.05, unanswered=0, answering_for=3.0, links=down))
    assert (v.health, v.message) == ("unhealthy", "public interface eth1 is down")


def test_liveness_recovery_needs_steady_answers_links_and_a_repair_first():
    back = Liveness(silent_for=0.05, unanswered=0, answering_for=0.4, links=LINKS_OK)
    v = verdict("unhealthy", back)
    assert v.health == "unhealthy" and "answering again" in v.message
    steady = Liveness(silent_for=0.05, unanswered=0, answering_for=1.2, links=None)
    assert verdict("unhealthy", steady).health == "unhealthy"  # links not seen since it came back
    v = verdict("unhealthy", Liveness(silent_for=0.05, unanswered=0, answering_for=1.2, links=LINKS_OK))
    assert v.health == "healthy" and v.repair_first
    node = verdict("unhealthy", Liveness(silent_for=0.05, unanswered=0, answering_for=1.2), gateway=False)
    assert node.health == "healthy" and not node.repair_first


def test_liveness_management_only_outage_keeps_the_gateway_in_service():
    # sshd stopped: the kernel refuses connections (an answer), links were up: traffic stays.
    live = Liveness(silent_for=0.1, unanswered=0, answering_for=5.0, links=LINKS_OK, management="connection refused")
    v = verdict("healthy", live)
    assert v.health == "healthy" and "management unreachable" in v.message and "traffic stays" in v.message
    # ...but a gateway that was down does not come back on refusals alone.
    assert verdict("unhealthy", live).health == "unhealthy"


def test_liveness_a_host_never_seen_is_unknown_until_it_answers():
    assert verdict("unknown", Liveness(silent_for=0.2, unanswered=1, answering_for=0.0)).health == "unknown"
    v = verdict("unknown", Liveness(silent_for=0.01, unanswered=0, answering_for=0.1, links=LINKS_OK))
    assert v.health == "healthy" and v.repair_first
