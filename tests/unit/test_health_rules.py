"""Health evaluation and the app's settle steps on plain values (egressportal/core/rules/health.py and
settle.py): no database, no host."""

from __future__ import annotations

import json

import pytest

from egressportal.core.models import EgressStatus, HealthStatus
from egressportal.core.rules import states
from egressportal.core.rules.health import (
    AppAddress,
    ProbeResult,
    app_egress_health,
    gateway_link_health,
    health_next,
)
from egressportal.core.rules.settle import GATEWAYS_READY, NODES_DONE, SettleStep, settle_step

OK = ProbeResult(True, True, "")
DOWN = ProbeResult(False, True, "public interface eth1 is down")  # the host answered: definitive
LOST = ProbeResult(False, False, "unreachable: timed out")  # no answer: may be a blip


def step(health, result, *, successes=0, failures=0, threshold=3):
    return health_next(health=health, successes=successes, failures=failures, result=result, threshold=threshold)


# -- hysteresis ----------------------------------------------------------------------------------


def test_unknown_host_is_healthy_after_one_good_probe():
    update = step(states.UNKNOWN, OK)
    assert (update.health, update.successes, update.failures, update.message, update.seen) == (
        states.HEALTHY, 1, 0, "", True
    )


def test_hysteresis_an_unreachable_host_must_fail_threshold_probes_in_a_row():
    first = step(states.HEALTHY, LOST)
    assert first.health == states.HEALTHY and first.failures == 1 and not first.seen
    second = step(states.HEALTHY, LOST, failures=1)
    assert second.health == states.HEALTHY
    third = step(states.HEALTHY, LOST, failures=2)
    assert third.health == states.UNHEALTHY and third.message == "unreachable: timed out"
    assert third.changed_from(states.HEALTHY)


def test_hysteresis_a_definitive_down_answer_counts_at_once():
    update = step(states.HEALTHY, DOWN)
    assert update.health == states.UNHEALTHY and update.message == DOWN.message


def test_hysteresis_recovery_needs_threshold_good_probes_in_a_row():
    one = step(states.UNHEALTHY, OK)
    assert one.health == states.UNHEALTHY and one.successes == 1
    assert one.message is None  # the reason it is down stays shown until it recovers
    two = step(states.UNHEALTHY, OK, successes=1)
    assert two.health == states.UNHEALTHY
    three = step(states.UNHEALTHY, OK, successes=2)
    assert three.health == states.HEALTHY and three.message == ""


def test_hysteresis_a_failure_resets_the_good_streak_and_a_success_the_bad_one():
    assert step(states.UNHEALTHY, LOST, successes=2).successes == 0
    assert step(states.HEALTHY, OK, failures=2).failures == 0


@pytest.mark.parametrize("threshold", [0, 1, -5])
def test_hysteresis_threshold_is_at_least_one(threshold):
    assert step(states.HEALTHY, LOST, threshold=threshold).health == states.UNHEALTHY
    assert step(states.UNHEALTHY, OK, threshold=threshold).health == states.HEALTHY


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
