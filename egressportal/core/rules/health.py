"""Health evaluation as pure functions: judging a gateway's links, the hysteresis of a host's health,
and what an app's egress status says given the health of its gateways.

The workers probe (workers/probes.py) and the services record (services/hosthealth.py); the decisions
are made here, on plain values, and unit-tested without a database or a host
(tests/unit/test_health_rules.py).

Hysteresis: a definitive "down" answer from a reachable host counts at once; an unreachable host must
fail ``threshold`` probes in a row (a lost packet is not an outage). Recovery needs ``threshold``
good probes in a row, so a flapping gateway does not drag traffic back and forth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .states import ASSIGNED, DEGRADED, FAILED, HEALTHY, UNHEALTHY, UNKNOWN

__all__ = [
    "AppAddress",
    "HealthUpdate",
    "ProbeResult",
    "app_egress_health",
    "gateway_link_health",
    "health_next",
]

_UP = {"UP", "UNKNOWN"}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    definitive: bool  # the host answered: its verdict is not a network blip
    message: str


def gateway_link_health(link_json: str, public_interface: str, transit_address: str) -> ProbeResult:
    """Judge ``ip -j -4 addr show`` output of a gateway: healthy when both its public interface and the
    interface holding its transit address are up."""
    try:
        links = json.loads(link_json or "[]")
    except ValueError:
        return ProbeResult(False, True, "the gateway returned unreadable interface data")
    by_name = {link.get("ifname"): link for link in links if isinstance(link, dict)}
    pub = by_name.get(public_interface)
    if pub is None:
        return ProbeResult(False, True, f"public interface {public_interface} is missing")
    if not _is_up(pub):
        return ProbeResult(False, True, f"public interface {public_interface} is down")
    transit = next(
        (
            link
            for link in by_name.values()
            if any(a.get("local") == transit_address for a in link.get("addr_info", []) if isinstance(a, dict))
        ),
        None,
    )
    if transit is None:
        return ProbeResult(False, True, f"transit address {transit_address} is not configured")
    if not _is_up(transit):
        return ProbeResult(False, True, f"transit interface {transit.get('ifname')} is down")
    return ProbeResult(True, True, "")


def _is_up(link: dict) -> bool:
    return link.get("operstate") in _UP and "UP" in link.get("flags", ["UP"])


@dataclass(frozen=True)
class HealthUpdate:
    health: str
    successes: int
    failures: int
    message: str | None  # None: keep the recorded message
    seen: bool  # the host answered well: it was seen now

    def changed_from(self, health: str) -> bool:
        return self.health != health


def health_next(*, health: str, successes: int, failures: int, result: ProbeResult, threshold: int) -> HealthUpdate:
    """A host's health after one more probe result (see the module's docstring for the rules)."""
    threshold = max(1, threshold)
    if result.ok:
        new = health
        if health == UNKNOWN or (health == UNHEALTHY and successes + 1 >= threshold):
            new = HEALTHY
        return HealthUpdate(new, successes + 1, 0, "" if new == HEALTHY else None, True)
    new = UNHEALTHY if result.definitive or failures + 1 >= threshold else health
    return HealthUpdate(new, 0, failures + 1, result.message, False)


class AppAddress(NamedTuple):
    """One of an app's egress addresses with its gateway's health."""

    address: str
    active: bool  # role active (else standby)
    gateway: str | None  # the gateway's name
    gateway_unhealthy: bool


def app_egress_health(ips: Sequence[AppAddress], *, ips_per_app: int) -> tuple[str, str]:
    """assigned, or degraded with the reason, from the health of an app's gateways (failed when it has no
    address at all); the message says what a user should know."""
    if not ips:
        return FAILED, "No egress address is assigned."
    active = next((ip for ip in ips if ip.active), ips[0])
    healthy = [ip for ip in ips if ip.gateway and not ip.gateway_unhealthy]
    if active.gateway and active.gateway_unhealthy:
        if healthy:
            return (
                DEGRADED,
                f"Gateway {active.gateway} is down; traffic leaves from the standby address {healthy[0].address}.",
            )
        return DEGRADED, "Every gateway of this app is down; traffic cannot leave until one recovers."
    if len(ips) < min(ips_per_app, 2):
        return ASSIGNED, "Redundancy is reduced: only one gateway can hold this app's addresses right now."
    if len(healthy) < len(ips):
        down = ", ".join(ip.gateway for ip in ips if ip not in healthy and ip.gateway)
        return ASSIGNED, f"Standby gateway {down} is down; no failover until it recovers."
    return ASSIGNED, ""
