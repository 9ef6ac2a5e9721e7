"""IPv6 egress proved by packet in the lab, without the domain: hand-built dual-stack states rendered by the
product's renderer, applied and read back in one exec per host through the product's SSH session class (as a
reconcile does), and the echo server on the lab's IPv6 internet saying which source address it saw.

The node's own IPv6 address before; the app's dedicated IPv6 address after (its IPv4 one unchanged beside it);
the standby's after a slot switch; an unmapped pod source dropped, never leaked; the node's address again after
removal; and no trace of IPv6 state left (nft ruleset, ip -6 rule, ip -6 route show table all)."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest

from egressportal import dataplane as dp
from egressportal.dataplane import GatewayState, NodeState
from workers.lab import HOST_PLAN, Lab, LabError
from workers.lab import plan as lab_plan
from workers.lab.plan import IF
from workers.ssh import HostTarget, SSHSession

pytestmark = [pytest.mark.lab]

APP = "shop-api"  # a demo app on node1
EGRESS4 = {"gw1": "203.0.113.140", "gw2": "203.0.113.141"}
EGRESS6 = {"gw1": "2001:db8:0:2:e::1", "gw2": "2001:db8:0:2:e::2"}
SLOT = {"gw1": 1, "gw2": 2}
NODES = [h for h, p in HOST_PLAN.items() if p.role == "node"]
GATEWAYS = [h for h, p in HOST_PLAN.items() if p.role == "gateway"]


def pods() -> list[str]:
    return [str(HOST_PLAN[n].pod_cidr) for n in NODES] + [str(HOST_PLAN[n].pod_cidr6) for n in NODES]


def gateway_state(gw: str, app: object | None, *, v6: bool = True) -> GatewayState:
    """What the domain would want on ``gw`` for ``app`` (None: no app), both families."""
    addresses, snat = [], {}
    if app is not None:
        addresses.append(EGRESS4[gw])
        snat[app.cidr] = EGRESS4[gw]
        if v6:
            addresses.append(EGRESS6[gw])
            snat[app.cidr6] = EGRESS6[gw]
    routes = {}
    for n in NODES:
        routes[str(HOST_PLAN[n].pod_cidr)] = str(HOST_PLAN[n].transit_address)
        routes[str(HOST_PLAN[n].pod_cidr6)] = str(HOST_PLAN[n].transit_address6)
    return GatewayState.build(
        public_interface=IF.PUBLIC, addresses=addresses, snat=snat, return_routes=routes, guarded_sources=pods()
    )


def node_state(app: object | None, slot4: int, slot6: int) -> NodeState:
    steering = {} if app is None else {app.cidr: slot4, app.cidr6: slot6}
    return NodeState.build(
        steering=steering,
        gateways={SLOT[g]: str(HOST_PLAN[g].transit_address) for g in GATEWAYS},
        gateways6={SLOT[g]: str(HOST_PLAN[g].transit_address6) for g in GATEWAYS},
        internal=[str(lab_plan.TRANSIT_NET), str(lab_plan.TRANSIT_NET6), *pods()],
    )


class Host:
    """One lab host as a reconcile sees it: an SSH session and the state it last read back."""

    def __init__(self, lab: Lab, name: str) -> None:
        h = lab.hosts[name]
        self.name, self.gateway = name, h.role == "gateway"
        self.session = SSHSession(
            HostTarget(h.mgmt_address, 22, "root", h.host_key), key_filename=str(lab.config.ssh_key_file)
        )
        self.reads = dp.gateway_read_commands(IF.PUBLIC) if self.gateway else dp.node_read_commands()
        self.actual = self.exec(dp.Plan())

    def exec(self, plan: dp.Plan) -> GatewayState | NodeState:
        """Apply ``plan`` and read back in ONE remote command; every step must succeed."""
        steps = plan.steps()
        result = self.session.run(dp.EXEC_ARGV, stdin=dp.render_exec_script(steps, self.reads, announce=plan.announce))
        outputs: dict[str, tuple[int, str]] = {}
        for name, status, text in dp.parse_exec_output(result.stdout):
            kind, _, which = name.partition(":")
            assert not (kind == "apply" and status), f"{self.name}: {steps[int(which)][0]} failed: {text}"
            if kind == "read":
                outputs[which] = (status, text)
        # The reconcile's own reading of the answers (a failed read raises).
        return dp.parse_host_reads(self.reads, outputs, public_interface=IF.PUBLIC if self.gateway else None)

    def converge(self, desired: GatewayState | NodeState) -> None:
        plan = dp.plan_gateway(self.actual, desired) if self.gateway else dp.plan_node(self.actual, desired)
        self.actual = self.exec(plan)
        assert self.actual == desired, f"{self.name} does not hold the applied state"

    def decommission(self) -> None:
        exists = self.session.run(dp.table_exists_command(), check=False).exit_status == 0
        exists6 = self.session.run(dp.table_exists_command(6), check=False).exit_status == 0
        self.actual = self.exec(dp.plan_gateway_decommission(self.actual, table_exists=exists, table6_exists=exists6))


@pytest.fixture
def hosts(clean_lab: Lab):
    opened = {name: Host(clean_lab, name) for name in HOST_PLAN}
    try:
        yield opened
    finally:
        for h in opened.values():
            h.session.close()


@contextlib.contextmanager
def leak_counter(lab: Lab):
    """Counts packets with a pod source address arriving at the internet router (its own table)."""
    script = (
        "table ip6 leakwatch {\n  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n"
        f"    ip6 saddr {lab_plan.POD_NET6_BASE} counter\n  }}\n}}\n"
    )
    lab.host_exec("inet", ["nft", "-f", "-"], input=script)

    def packets() -> int:
        listed = json.loads(lab.host_exec("inet", ["nft", "-j", "list", "table", "ip6", "leakwatch"]).stdout)
        return sum(e["counter"]["packets"] for item in listed["nftables"] if "rule" in item
                   for e in item["rule"]["expr"] if "counter" in e)  # fmt: skip

    try:
        yield packets
    finally:
        lab.host_exec("inet", ["nft", "delete", "table", "ip6", "leakwatch"], check=False)


def traces6(lab: Lab, host: str) -> list[str]:
    """The product's IPv6 state on a host as the host's own tools list it (not the product's parser)."""
    found = []
    ruleset = lab.host_exec(host, ["nft", "list", "ruleset"]).stdout
    if "table ip6 egressportal" in ruleset:
        found.append("nft table ip6 egressportal")
    for line in lab.host_exec(host, ["ip", "-6", "rule", "show"]).stdout.splitlines():
        if "lookup 7" in line or "proto 250" in line:
            found.append(f"rule: {line.strip()}")
    for line in lab.host_exec(host, ["ip", "-6", "route", "show", "table", "all"]).stdout.splitlines():
        if "proto 250" in line or " table 71" in line or " table 72" in line or " table 73" in line:
            found.append(f"route: {line.strip()}")
    addrs = lab.host_exec(host, ["ip", "-6", "addr", "show"]).stdout
    found += [f"address {a}" for a in EGRESS6.values() if a in addrs]
    return found


def test_ipv6_egress_by_packet(clean_lab: Lab, hosts):
    lab = clean_lab
    app = lab.apps[APP]
    node = hosts[app.node]
    node_public6 = str(HOST_PLAN[app.node].public6)
    # Before: the app's IPv6 traffic leaves from its node's own address (the platform's shared egress).
    assert lab.seen_ip6(APP) == node_public6
    assert lab.seen_ip(APP) == str(HOST_PLAN[app.node].public)

    # Gateways first (make before break), then the node steers both families to gw1.
    for gw in GATEWAYS:
        hosts[gw].converge(gateway_state(gw, app))
    node.converge(node_state(app, SLOT["gw1"], SLOT["gw1"]))
    assert lab.seen_ip6(APP) == EGRESS6["gw1"]
    assert lab.seen_ip(APP) == EGRESS4["gw1"]

    # Failover of IPv6 alone: the node switches the slot; the standby's dedicated address is seen.
    node.converge(node_state(app, SLOT["gw1"], SLOT["gw2"]))
    assert lab.seen_ip6(APP) == EGRESS6["gw2"]
    assert lab.seen_ip(APP) == EGRESS4["gw1"]

    # The guard: gw2 loses the app's IPv6 mapping while the node still steers to it. Its pod source must
    # never leave as it is: the packet is dropped.
    hosts["gw2"].converge(gateway_state("gw2", app, v6=False))
    with leak_counter(lab) as leaked:
        with pytest.raises(LabError):
            lab.seen_ip6(APP, timeout=1.0, retries=0)
        assert leaked() == 0, "a pod's IPv6 source address reached the internet"
    assert lab.seen_ip(APP) == EGRESS4["gw1"]

    # Removal: the node stops steering, then the gateways drop the app: the node's address again.
    node.converge(node_state(None, 1, 1))
    for gw in GATEWAYS:
        hosts[gw].converge(gateway_state(gw, None))
    assert lab.seen_ip6(APP) == node_public6
    assert lab.seen_ip(APP) == str(HOST_PLAN[app.node].public)

    # No IPv6 entries at all: no ip6 table, no IPv6 slot rules or routes, no egress /128 anywhere.
    node.converge(NodeState.build(internal=[str(lab_plan.TRANSIT_NET)]))
    for gw in GATEWAYS:
        hosts[gw].converge(GatewayState.build(public_interface=IF.PUBLIC))
        hosts[gw].decommission()
        assert "egressportal" not in lab.host_exec(gw, ["nft", "list", "ruleset"]).stdout
    for name in HOST_PLAN:
        assert traces6(lab, name) == [], name
    assert lab.seen_ip6(APP) == node_public6


def test_the_lab_is_dual_stack_and_management_stays_ipv4(clean_lab: Lab):
    lab = clean_lab
    for name, h in HOST_PLAN.items():
        mgmt = lab.host_exec(name, ["ip", "-6", "addr", "show", "dev", IF.MGMT]).stdout
        assert "inet6" not in mgmt, f"{name}: IPv6 on the management link"
        transit = lab.host_exec(name, ["ip", "-6", "addr", "show", "dev", IF.TRANSIT]).stdout
        assert f"{h.transit_address6}/64" in transit
    for app in lab.apps.values():
        assert app.address6 in lab.host_exec(f"app:{app.name}", ["ip", "-6", "addr", "show", "dev", IF.APP]).stdout
    # Every IPv6 network of the plan is inside the documentation prefix.
    doc = lab_plan.PUBLIC_NET6.supernet(new_prefix=32)
    assert str(doc) == "2001:db8::/32"
    for net in (lab_plan.TRANSIT_NET6, lab_plan.EGRESS_POOL6, lab_plan.INTERNET_NET6, lab_plan.POD_NET6_BASE):
        assert net.subnet_of(doc)
    # The lab's links in the root namespace carry no IPv6 at all.
    links = json.loads(subprocess.run(["ip", "-j", "-6", "addr", "show"], capture_output=True, text=True).stdout or "[]")
    assert not [link["ifname"] for link in links if link["ifname"].startswith(f"{lab.prefix}-")]
