from .apps import App, EgressStatus, EgressType, HostSync
from .events import Event, EventLevel
from .hosts import HOST_MODELS, Gateway, HealthStatus, ManagedHost, Node, host_model
from .network import EgressIP, EgressIPRole, EgressIPStatus, IPFamily, IPPool, Region
from .placements import Placement, TenantQuota

__all__ = [
    "HOST_MODELS",
    "App",
    "EgressIP",
    "EgressIPRole",
    "EgressIPStatus",
    "EgressStatus",
    "EgressType",
    "Event",
    "EventLevel",
    "Gateway",
    "HealthStatus",
    "HostSync",
    "IPFamily",
    "IPPool",
    "ManagedHost",
    "Node",
    "Placement",
    "Region",
    "TenantQuota",
    "host_model",
]
