"""Health evaluation as pure functions: judging a gateway's links, the hysteresis of a host's health,
and what an app's egress status says given the health of its gateways.

The probers probe (workers/prober.py) and the services record (services/hosthealth.py); the decisions
are made here, on plain values, and unit-tested without a database or a host
(tests/unit/test_health_rules.py).

Hysteresis: a definitive "down" answer from a reachable host (a link reported down) counts at once.
The prober (workers/prober.py) judges liveness by silence instead of by counting rounds: it keeps one SSH
session per host with an echo channel open and sends a byte every probe interval; every echoed byte, and a
refused TCP connection (the host's kernel answering while sshd is gone), is an answer. ``liveness_verdict``
turns what it saw into a health: a host silent for ``dead_after`` seconds with at least ``min_unanswered``
probes sent meanwhile is down (the silence window is the hysteresis: one late answer is not an outage);
a host that was down must answer without a gap for ``recover_after`` seconds (and a gateway must report its
links up) before it is healthy again, and a gateway coming back must be repaired first (``repair_first``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .states import ASSIGNED, DEGRADED, FAILED, HEALTHY, UNHEALTHY

__all__ = [
    "AppAddress",
    "Liveness",
    "ProbeResult",
    "app_egress_health",
    "gateway_link_health",
    "liveness_verdict",
    "Verdict",
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
class Liveness:
    """What a prober saw of one host, as of now (seconds on the prober's monotonic clock)."""

    silent_for: float  # since the last answer (an echoed byte or a refused connection), or since probing began
    unanswered: int  # probes sent (echo bytes, connection attempts) since that answer
    answering_for: float  # how long answers have come without a gap of dead_after (0 while silent)
    links: ProbeResult | None = None  # a gateway's last links verdict (None: not known since it came back)
    management: str = ""  # why no SSH session is open while the host answers ("" when one is open)


@dataclass(frozen=True)
class Verdict:
    health: str
    message: str
    repair_first: bool = False  # a gateway turning healthy: reconcile and verify it before traffic returns


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def liveness_verdict(
    *,
    health: str,
    live: Liveness,
    gateway: bool,
    dead_after: float,
    recover_after: float,
    min_unanswered: int,
) -> Verdict:
    """A host's health from what the prober saw (see the module's docstring for the rules)."""
    if live.silent_for >= dead_after and live.unanswered >= max(1, min_unanswered):
        return Verdict(UNHEALTHY, f"no answer for {_ms(live.silent_for)}: the host is down or cut off")
    if gateway and live.links is not None and not live.links.ok:
        # The host answered that a link is down: definitive, no need to wait.
        return Verdict(UNHEALTHY, live.links.message)
    if health != HEALTHY:
        # Back (or never seen yet): answers without a gap for recover_after, and a gateway must have shown
        # its links up over a working session; until then it stays as it is.
        steady = live.answering_for >= (recover_after if health == UNHEALTHY else 0.0) and live.answering_for > 0
        if steady and not live.management and (not gateway or live.links is not None):
            return Verdict(HEALTHY, "", repair_first=gateway)
        if health == UNHEALTHY and live.answering_for > 0:
            return Verdict(health, "answering again; traffic returns once it is steady and repaired")
        return Verdict(health, "")
    if live.management:
        # Management-only outage (sshd stopped): the kernel answers, the links were up when last seen.
        # Policy: stay. Moving traffic would cut the connections in flight through a gateway that still works.
        return Verdict(HEALTHY, f"management unreachable ({live.management}); traffic stays on this gateway")
    return Verdict(HEALTHY, "")


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
        down = [ip.gateway for ip in ips if ip not in healthy and ip.gateway]
        names = down[0] if len(down) == 1 else ", ".join(down[:-1]) + " and " + down[-1]
        subject = f"Standby gateway {names} is" if len(down) == 1 else f"Standby gateways {names} are"
        if any(not ip.active for ip in healthy):
            # Another standby is still healthy: a failover would go there, so say that, not "no failover".
            return ASSIGNED, f"{subject} down; another standby still covers a failover."
        return ASSIGNED, f"{subject} down; no failover until {'it recovers' if len(down) == 1 else 'one recovers'}."
    return ASSIGNED, ""
