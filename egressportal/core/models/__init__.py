from .apps import App, AppSourceCIDR, EgressStatus, EgressType, HostSync
from .events import Event, EventLevel
from .hosts import Gateway, HealthStatus, ManagedHost, Node
from .network import EgressIP, EgressIPRole, EgressIPStatus, IPPool, Region
from .placements import Placement, TenantQuota

__all__ = [
    "App",
    "AppSourceCIDR",
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
    "IPPool",
    "ManagedHost",
    "Node",
    "Placement",
    "Region",
    "TenantQuota",
]
