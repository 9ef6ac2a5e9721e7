"""The lab: gateways, nodes and an internet host as network namespaces with real sshd, on one machine.

No Django here: the management command, the tests, the benchmarks and the demo all drive it directly.
"""

from .plan import DEMO_APPS, ECHO_ADDRESS, EGRESS_POOL, HOST_PLAN
from .topology import REPO_ROOT, Lab, LabApp, LabConfig, LabError, LabHost

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
]
