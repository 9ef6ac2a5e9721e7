"""How an app moves forward as its hosts catch up (make before break, the app's side), as a pure
function of what is left to do. ``services.hostsync.app_settle`` loads the inputs, applies the step.

Enabling: gateways first; once no gateway is left the app is "assigning" towards the nodes, which are
asked to steer; once nothing is left its status follows the health of its gateways.
Disabling: nodes first (they stop steering); then the gateways remove the addresses; then the addresses
are released to quarantine and the app is "disabled".
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from .states import ASSIGNING, FAILED, RELEASING

__all__ = ["SettleStep", "settle_step", "GATEWAYS_READY", "NODES_DONE"]

GATEWAYS_READY = "Gateways ready; steering traffic on the nodes."
NODES_DONE = "Nodes no longer steer; removing addresses from gateways."


@dataclass(frozen=True)
class SettleStep:
    # A status (and message) to write now, or None to leave it.
    status: str | None = None
    message: str = ""
    # Hosts that now have work because of this step.
    follow_gateways: frozenset[int] = frozenset()
    follow_nodes: frozenset[int] = frozenset()
    # Dedicated and nothing left: the status follows the gateways' health (rules/health.py).
    from_health: bool = False
    # Shared and nothing left: release the addresses to quarantine, the app is disabled.
    release: bool = False


def settle_step(
    *, dedicated: bool, status: str, message: str, gateways_left: Set[int], nodes_left: Set[int]
) -> SettleStep:
    if dedicated:
        if gateways_left or nodes_left:
            if not gateways_left and status in (ASSIGNING, FAILED):
                return SettleStep(ASSIGNING, GATEWAYS_READY, follow_nodes=frozenset(nodes_left))
            return SettleStep()
        return SettleStep(from_health=True)
    if nodes_left:
        return SettleStep()
    if gateways_left:
        if status != RELEASING or "gateways" not in message:
            return SettleStep(RELEASING, NODES_DONE, follow_gateways=frozenset(gateways_left))
        return SettleStep(follow_gateways=frozenset(gateways_left))
    return SettleStep(release=True)
