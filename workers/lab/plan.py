"""The lab's address plan and names: one table, so every address is defined once.

Only 198.18.0.0/15 (management, transit, pods), 203.0.113.0/24 (public side and the egress pool) and
198.51.100.0/24 (the internet host) are ever used: documentation/benchmark ranges that cannot clash with a
real network the machine is attached to.

IPv6 (dual-stack transit, public, pod and internet segments; management stays IPv4-only) comes from the
documentation prefix 2001:db8::/32 only:

    transit   2001:db8:0:1::/64      host <octet> at 2001:db8:0:1::<octet hex>
    public    2001:db8:0:2::/64      router ::1, host <octet> at ::<octet hex>, egress pool 2001:db8:0:2:e::/80
    pods      2001:db8:10:<octet hex>::/64 per node, bridge ::1; an app in /28 slot S gets ::<S+1>00/120, address ::<S+1>01
    internet  2001:db8:ff::/64       router ::1, echo server 2001:db8:ff::10
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Address, IPv6Interface, IPv6Network

__all__ = [
    "DEMO_APPS",
    "ECHO_ADDRESS",
    "ECHO_ADDRESS6",
    "ECHO_PORT",
    "EGRESS_POOL",
    "EGRESS_POOL6",
    "HOST_PLAN",
    "HostPlan",
    "IF",
    "INTERNET_ADDRESS",
    "INTERNET_ADDRESS6",
    "INTERNET_NET",
    "INTERNET_NET6",
    "MAX_GATEWAYS",
    "MAX_INDEX",
    "MAX_NODES",
    "PUBLIC_NET",
    "PUBLIC_NET6",
    "ROUTER_PUBLIC",
    "ROUTER_PUBLIC6",
    "TRANSIT_NET",
    "TRANSIT_NET6",
    "app_net6",
    "app_netns",
    "check_app_name",
    "check_prefix",
    "host_plan",
    "mgmt_bridge_address",
    "mgmt_network",
    "root_mgmt_bridge",
    "root_mgmt_port",
]

# Management networks 198.18.<index>.0/24 stay below the transit (198.18.100.0/24) and pod (198.18.64.0/18) ranges.
MAX_INDEX = 31
TRANSIT_NET = IPv4Network("198.18.100.0/24")
PUBLIC_NET = IPv4Network("203.0.113.0/24")
EGRESS_POOL = IPv4Network("203.0.113.128/25")  # gateways hold /32s of it on their public interface
INTERNET_NET = IPv4Network("198.51.100.0/24")
ROUTER_PUBLIC = IPv4Interface("203.0.113.1/24")  # default gateway of gateways and nodes
INTERNET_ADDRESS = IPv4Interface("198.51.100.1/24")  # the router's own address on the "internet"
ECHO_ADDRESS = IPv4Address("198.51.100.10")
ECHO_PORT = 80
POD_APP_PREFIXLEN = 28  # each app instance gets a fresh /28 of its node's pod /24

TRANSIT_NET6 = IPv6Network("2001:db8:0:1::/64")
PUBLIC_NET6 = IPv6Network("2001:db8:0:2::/64")
EGRESS_POOL6 = IPv6Network("2001:db8:0:2:e::/80")  # on-link on the public /64: gateways hold /128s of it
ROUTER_PUBLIC6 = IPv6Interface("2001:db8:0:2::1/64")
INTERNET_NET6 = IPv6Network("2001:db8:ff::/64")
INTERNET_ADDRESS6 = IPv6Interface("2001:db8:ff::1/64")
ECHO_ADDRESS6 = IPv6Address("2001:db8:ff::10")
POD_NET6_BASE = IPv6Network("2001:db8:10::/48")  # node pod /64s: 2001:db8:10:<octet>::/64
POD_APP_PREFIXLEN6 = 120  # the domain's limit for an IPv6 placement


@dataclass(frozen=True)
class HostPlan:
    name: str
    role: str  # "gateway" | "node"
    octet: int  # last octet on the management and transit segments
    public: IPv4Address
    pod_cidr: IPv4Network | None = None

    def mgmt_address(self, index: int) -> IPv4Address:
        return mgmt_network(index).network_address + self.octet

    @property
    def transit_address(self) -> IPv4Address:
        return TRANSIT_NET.network_address + self.octet

    @property
    def transit_address6(self) -> IPv6Address:
        return TRANSIT_NET6.network_address + self.octet

    @property
    def public6(self) -> IPv6Address:
        return PUBLIC_NET6.network_address + self.octet

    @property
    def pod_cidr6(self) -> IPv6Network | None:
        # Derived from the octet (unique per host), so every node of any plan gets its own /64.
        return IPv6Network((POD_NET6_BASE.network_address + (self.octet << 64), 64)) if self.pod_cidr else None

    @property
    def pod_gateway6(self) -> IPv6Interface | None:
        return IPv6Interface(f"{self.pod_cidr6.network_address + 1}/64") if self.pod_cidr6 else None

    @property
    def pod_gateway(self) -> IPv4Interface | None:
        # The node's pod bridge holds .1 with the whole /24, so app namespaces reach it on-link.
        return IPv4Interface(f"{self.pod_cidr.network_address + 1}/{self.pod_cidr.prefixlen}") if self.pod_cidr else None


# A fleet lab has more of the same hosts (LabConfig(gateways=4, nodes=40)); gw1, gw2, node1 and node2 are
# always the ones below. Gateway N: management/transit octet 10+N, public 203.0.113.(1+N); node N: octet 20+N,
# public 203.0.113.(20+N) (below the egress pool), pods the N-th /24 of 198.18.64.0/18 that is not transit.
MAX_GATEWAYS = 9
MAX_NODES = 63
POD_NET = IPv4Network("198.18.64.0/18")


def _pod_cidr(n: int) -> IPv4Network:
    free = (net for net in POD_NET.subnets(new_prefix=24) if not net.overlaps(TRANSIT_NET))
    for _ in range(n - 1):
        next(free)
    return next(free)


def host_plan(gateways: int = 2, nodes: int = 2) -> dict[str, HostPlan]:
    """The hosts of a lab with ``gateways`` gateways and ``nodes`` nodes, gateways first."""
    if not isinstance(gateways, int) or not 1 <= gateways <= MAX_GATEWAYS:
        raise ValueError(f"a lab has 1..{MAX_GATEWAYS} gateways, not {gateways!r}")
    if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"a lab has 1..{MAX_NODES} nodes, not {nodes!r}")
    hosts = [HostPlan(f"gw{n}", "gateway", 10 + n, PUBLIC_NET.network_address + 1 + n) for n in range(1, gateways + 1)]
    hosts += [
        HostPlan(f"node{n}", "node", 20 + n, PUBLIC_NET.network_address + 20 + n, _pod_cidr(n))
        for n in range(1, nodes + 1)
    ]
    return {h.name: h for h in hosts}


HOST_PLAN: dict[str, HostPlan] = host_plan(2, 2)  # the default lab


class IF:
    """Interface names inside the namespaces (short, fixed: each namespace has its own name space)."""

    MGMT = "mgmt0"
    TRANSIT = "transit0"
    PUBLIC = "public0"
    PODS = "pods0"
    APP = "eth0"  # inside an app namespace
    INET = "inet0"  # the internet side of the router (a veth whose peer INET_PEER stays in the same ns)
    INET_PEER = "inet1"
    BR_TRANSIT = "br-transit"  # in <prefix>-sw
    BR_PUBLIC = "br-public"  # in <prefix>-sw

    @staticmethod
    def sw_port(segment: str, host: str) -> str:
        return f"{segment[0]}-{host}"  # "t-gw1", "p-node2", "p-inet"

    @staticmethod
    def app_port(slot: int) -> str:
        return f"app{slot}"  # node side of an app's veth, named after its /28 slot (unique per node)


# Demo apps (owner, app, node): created by `lab up` and by the test fixtures.
DEMO_APPS: tuple[tuple[str, str, str], ...] = (
    ("alice", "shop-api", "node1"),
    ("alice", "billing", "node1"),
    ("bob", "crawler", "node2"),
)

_PREFIX_RE = re.compile(r"^[a-z0-9]{1,4}$")
_APP_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_prefix(prefix: str) -> str:
    # No '-' in a prefix: "<prefix>-" then never matches another lab's names ("ep-" vs "ep2-").
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
        raise ValueError(f"lab prefix must be 1-4 characters of a-z and 0-9, got {prefix!r}")
    return prefix


def check_app_name(name: str) -> str:
    if not isinstance(name, str) or not _APP_RE.match(name):
        raise ValueError(f"lab app names are DNS labels (a-z, 0-9, '-', at most 63), got {name!r}")
    return name


def mgmt_network(index: int) -> IPv4Network:
    if not isinstance(index, int) or not 0 <= index <= MAX_INDEX:
        raise ValueError(f"lab index must be 0..{MAX_INDEX}, got {index!r}")
    return IPv4Network(f"198.18.{index}.0/24")


def mgmt_bridge_address(index: int) -> IPv4Interface:
    net = mgmt_network(index)
    return IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")


def root_mgmt_bridge(prefix: str) -> str:
    return f"{prefix}-mgmt"


def root_mgmt_port(prefix: str, host: str) -> str:
    return f"{prefix}-m{host}"  # at most 4 + 2 + 5 = 11 characters


def app_net6(node: str, slot: int) -> tuple[IPv6Network, IPv6Address]:
    """The IPv6 source network and address of the app instance in /28 slot ``slot`` of ``node``."""
    # Any node of any lab size: node N is the same host in every plan.
    host = HOST_PLAN.get(node) or host_plan(1, MAX_NODES).get(node)
    pods = host.pod_cidr6 if host else None
    if pods is None:
        raise ValueError(f"{node} has no pod subnet")
    net = IPv6Network((pods.network_address + ((slot + 1) << 8), POD_APP_PREFIXLEN6))
    return net, net.network_address + 1


def app_netns(prefix: str, name: str) -> str:
    return f"{prefix}-app-{name}"
