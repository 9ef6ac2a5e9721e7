"""The lab: gateways, nodes and an internet host as network namespaces with real sshd, on one machine.

No Django here: the management command, the tests, the benchmarks and the demo all drive it directly.

The lab runs its own commands, not the product's renderer: it builds what a platform provides (namespaces,
links, sshd, the nodes' masquerade) and, to simulate a reboot, removes the product's state by itself, so a
bug in the product's renderer or parser cannot hide from tests that use the lab as an independent view of a
host (tests/unit/test_lab_conventions.py pins the conventions it shares with the dataplane).
"""

import json

from .plan import DEMO_APPS, ECHO_ADDRESS, EGRESS_POOL, HOST_PLAN, host_plan
from .topology import REPO_ROOT, Lab, LabApp, LabConfig, LabError, LabHost


def running_lab(prefix: str) -> Lab | None:
    """The lab of ``prefix`` when it was built on this machine (its state directory exists), else None.
    Its size (gateways, nodes) is the one it was built with."""
    config = LabConfig(prefix=prefix)
    if not config.state_dir.exists():
        return None
    try:
        state = json.loads((config.state_dir / "state.json").read_text())
        config = LabConfig(prefix=prefix, index=int(state.get("index", 0)), gateways=int(state.get("gateways", 2)),
                           nodes=int(state.get("nodes", 2)))
    except (OSError, ValueError, TypeError):
        pass  # built by an older version, or half-written: the default lab
    return Lab(config)


__all__ = [
    "DEMO_APPS",
    "ECHO_ADDRESS",
    "EGRESS_POOL",
    "HOST_PLAN",
    "REPO_ROOT",
    "Lab",
    "LabApp",
    "LabConfig",
    "LabError",
    "LabHost",
    "host_plan",
    "running_lab",
]
