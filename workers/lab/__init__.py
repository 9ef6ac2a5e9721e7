"""The lab: gateways, nodes and an internet host as network namespaces with real sshd, on one machine.

No Django here: the management command, the tests, the benchmarks and the demo all drive it directly.
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
