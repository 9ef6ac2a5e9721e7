"""Edges of health evaluation (egressportal/core/rules/health.py) that tests/unit/test_health_rules.py leaves open,
found by mutation testing (docs/MUTATION.md): interface output with optional keys left out, an app whose addresses
are all standby, three addresses per app, and the exact words a user reads."""

from __future__ import annotations

import json

from egressportal.core.rules import states
from egressportal.core.rules.health import AppAddress, ProbeResult, app_egress_health, gateway_link_health

TRANSIT = "198.18.8.11"


def _links(*links: dict) -> str:
    return json.dumps(list(links))


def test_empty_interface_output_means_no_interfaces():
    result = gateway_link_health("", "eth1", TRANSIT)
    assert result == ProbeResult(False, True, "public interface eth1 is missing")


def test_links_without_flags_or_addresses_are_judged_by_what_they_have():
    output = _links(
        {"ifname": "eth1", "operstate": "UP"},  # no "flags": up by its operstate
        {"ifname": "eth9", "operstate": "DOWN"},  # no "addr_info" at all
        {"ifname": "transit0", "operstate": "UNKNOWN", "flags": ["UP"], "addr_info": [{"local": TRANSIT}]},
    )
    assert gateway_link_health(output, "eth1", TRANSIT) == ProbeResult(True, True, "")


def _ip(address: str, *, active: bool, gateway: str, down: bool = False) -> AppAddress:
    return AppAddress(address, active, gateway, down)


def test_no_address_at_all_is_a_failure_in_words():
    assert app_egress_health([], ips_per_app=2) == (states.FAILED, "No egress address is assigned.")


def test_without_an_active_address_the_first_one_counts_as_active():
    ips = [_ip("203.0.113.10", active=False, gateway="gw1", down=True),
           _ip("203.0.113.11", active=False, gateway="gw2")]
    assert app_egress_health(ips, ips_per_app=2) == (
        states.DEGRADED, "Gateway gw1 is down; traffic leaves from the standby address 203.0.113.11."
    )


def test_three_addresses_per_app():
    two = [_ip("203.0.113.10", active=True, gateway="gw1"), _ip("203.0.113.11", active=False, gateway="gw2")]
    # Two gateways are redundancy enough, even when three addresses are asked for.
    assert app_egress_health(two, ips_per_app=3) == (states.ASSIGNED, "")
    three = [*two[:1], _ip("203.0.113.11", active=False, gateway="gw2", down=True),
             _ip("203.0.113.12", active=False, gateway="gw3", down=True)]
    assert app_egress_health(three, ips_per_app=3) == (
        states.ASSIGNED, "Standby gateways gw2 and gw3 are down; no failover until one recovers."
    )
    # One standby down, another healthy: a failover still has somewhere to go, and the message says so.
    one_down = [*two[:1], _ip("203.0.113.11", active=False, gateway="gw2", down=True),
                _ip("203.0.113.12", active=False, gateway="gw3")]
    assert app_egress_health(one_down, ips_per_app=3) == (
        states.ASSIGNED, "Standby gateway gw2 is down; another standby still covers a failover."
    )
