"""The lab: gateways, nodes and an internet host as network namespaces with real sshd, on one machine.

No Django here: the management command, the tests, the benchmarks and the demo all drive it directly.

The lab runs its own commands, not the product's renderer: it builds what a platform provides (namespaces,
links, sshd, the nodes' masquerade) and, to simulate a reboot, removes the product's state by itself, so a
bug in the product's renderer or parser cannot hide from tests that use the lab as an independent view of a
host (tests/unit/test_lab_conventions.py pins the conventions it shares with the dataplane).
"""

from .plan import DEMO_APPS, ECHO_ADDRESS, EGRESS_POOL, HOST_PLAN
from .topology import REPO_ROOT, Lab, LabApp, LabConfig, LabError, LabHost


def running_lab(prefix: str) -> Lab | None:
    """The lab of ``prefix`` when it was built on this machine (its state directory exists), else None."""
    lab = Lab(LabConfig(prefix=prefix))
    return lab if lab.config.state_dir.exists() else None


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
    "running_lab",
]
