"""Edges of the desired-state rules that tests/unit/test_desired_rules.py leaves open, found by mutation testing
(docs/MUTATION.md)."""

from __future__ import annotations

from ipaddress import IPv4Network

from egressportal.core.rules.desired import node_plan
from tests.unit.test_desired_rules import APP, CIDR, OTHER, OTHER_CIDR, active, node_snap, standby


def test_an_app_not_yet_steerable_does_not_hold_back_the_apps_after_it():
    # APP comes first and has no address live on a gateway yet; OTHER, after it, is steered all the same.
    plan = node_plan(node_snap({APP: [active(programmed=False), standby(programmed=False)], OTHER: [active()]},
                               pending=[(1, APP), (2, OTHER)]))
    assert dict(plan.state.steering) == {IPv4Network(OTHER_CIDR): 1}
    assert IPv4Network(CIDR) not in plan.state.steering
    assert plan.steered == {OTHER: "gw1"} and plan.settles == [2]
