"""Rendered nft/ip plans loaded into the real kernel in a scratch netns, read back and parsed (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from ipaddress import ip_address

import pytest

from egressportal.dataplane import (
    EXEC_ARGV,
    DataplaneParseError,
    GatewayState,
    HostRead,
    NodeState,
    exec_results,
    gateway_read_commands,
    is_missing_table_error,
    node_read_commands,
    parse_gateway,
    parse_host_reads,
    parse_node,
    plan_gateway,
    plan_node,
    render_exec_script,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"), reason="needs root, nft and ip"
)


class Netns:
    def __init__(self) -> None:
        self.name = f"epdp-{uuid.uuid4().hex[:8]}"

    def run(self, argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], input=stdin, capture_output=True, text=True, timeout=30
        )
        if check and result.returncode:
            raise AssertionError(f"{argv} failed: {result.stderr}")
        return result

    def apply(self, plan) -> None:
        for argv, stdin in plan.steps():
            self.run(argv, stdin)


@pytest.fixture()
def netns():
    ns = Netns()
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        # Addresses only from documentation/benchmark ranges; nothing leaves the namespace.
        for dev, addr in (("eth0", "198.51.100.2/24"), ("transit0", "198.18.0.1/24")):
            ns.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"])
            ns.run(["ip", "link", "set", dev, "up"])
            ns.run(["ip", "link", "set", f"{dev}p", "up"])
            ns.run(["ip", "addr", "add", addr, "dev", dev])
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False)


def _nft(ns: Netns, argv: list[str]) -> str | None:
    r = ns.run(argv, check=False)
    if r.returncode and is_missing_table_error(r.stderr):
        return None
    assert r.returncode == 0, r.stderr
    return r.stdout


def read_host(ns: Netns, reads: dict[str, HostRead], public_interface: str | None) -> GatewayState | NodeState:
    """Read back as a reconcile does: every read in one ``sh -s`` (render_exec_script), then parse_host_reads."""
    r = ns.run(EXEC_ARGV, render_exec_script([], reads))
    return parse_host_reads(reads, exec_results(r.stdout, steps=0)[1], public_interface=public_interface)


def read_gateway(ns: Netns) -> GatewayState:
    return read_host(ns, gateway_read_commands("eth0"), "eth0")


def read_node(ns: Netns) -> NodeState:
    return read_host(ns, node_read_commands(), None)


GW1 = GatewayState.build(
    public_interface="eth0",
    addresses=["203.0.113.10", "203.0.113.11"],
    snat={"198.19.1.0/24": "203.0.113.10", "198.19.2.0/25": "203.0.113.11", "198.19.3.5/32": "203.0.113.11"},
    return_routes={"198.19.1.0/24": "198.18.0.11", "198.19.2.0/24": "198.18.0.12"},
    guarded_sources=["198.19.0.0/16"],
)
GW2 = GatewayState.build(
    public_interface="eth0",
    addresses=["203.0.113.11", "203.0.113.12"],
    snat={"198.19.2.0/25": "203.0.113.11", "198.19.4.0/24": "203.0.113.12"},
    return_routes={"198.19.2.0/24": "198.18.0.13"},
    guarded_sources=["198.19.0.0/16", "198.18.128.0/17"],
    pools=["203.0.113.0/28"],
)
EMPTY_GW = GatewayState.build(public_interface="eth0")
NODE1 = NodeState.build(
    steering={"198.19.1.0/24": 1, "198.19.2.0/25": 2},
    gateways={1: "198.18.0.5", 2: "198.18.0.6", 3: "198.18.0.7"},
    internal=["198.19.0.0/16", "198.18.0.0/24", "198.18.250.0/24"],
)
NODE2 = NodeState.build(steering={"198.19.1.0/24": 3}, gateways={3: "198.18.0.8"}, internal=["198.19.0.0/16"])


def test_gateway_round_trip(netns):
    assert read_gateway(netns) == EMPTY_GW
    for desired in (GW1, GW2, GW1, EMPTY_GW):
        plan = plan_gateway(read_gateway(netns), desired)
        netns.apply(plan)
        assert read_gateway(netns) == desired, plan.summary()
        assert plan_gateway(read_gateway(netns), desired).is_empty
    # Only our tables, and our pool routes are gone again.
    assert netns.run(["nft", "list", "tables"]).stdout.split() == ["table", "ip", "egressportal", "table", "arp", "egressportal"]
    assert "203.0.113." not in netns.run(["ip", "-4", "route", "show", "table", "all"]).stdout
    assert "203.0.113." not in netns.run(["ip", "-4", "addr", "show"]).stdout


def test_gateway_nft_applies_twice_and_from_nothing(netns):
    plan = plan_gateway(None, GW1)
    netns.apply(plan)
    netns.run(["nft", "-f", "-"], plan.nft)  # replacing an existing table is the same script
    assert read_gateway(netns) == GW1


def test_gateway_repairs_drift(netns):
    netns.apply(plan_gateway(None, GW1))
    netns.run(["nft", "flush", "chain", "ip", "egressportal", "forward"])
    netns.run(["nft", "flush", "chain", "arp", "egressportal", "input"])
    netns.run(["ip", "route", "del", "local", "203.0.113.10/31", "table", "local"])
    drifted = read_gateway(netns)
    assert drifted != GW1
    plan = plan_gateway(drifted, GW1)
    netns.apply(plan)
    assert read_gateway(netns) == GW1


def test_gateway_migrates_from_the_old_layout(netns):
    # What older versions wrote: a /32 per address, recorded in the ip table.
    netns.run(["ip", "-batch", "-"], "addr add 203.0.113.10/32 dev eth0\naddr add 203.0.113.11/32 dev eth0\n")
    record = "  set egress_addresses {\n    type ipv4_addr\n    elements = { 203.0.113.10, 203.0.113.11 }\n  }\n"
    old_nft = plan_gateway(None, GW1).nft.split("table arp")[0].replace("  set guarded_sources", record + "  set guarded_sources")
    netns.run(["nft", "-f", "-"], old_nft)
    old = read_gateway(netns)
    assert old.legacy_addresses == GW1.addresses and old.addresses == GW1.addresses and old.snat == GW1.snat
    netns.apply(plan_gateway(old, GW1))
    assert read_gateway(netns) == GW1
    assert "203.0.113.1" not in netns.run(["ip", "-4", "addr", "show", "dev", "eth0"]).stdout


def test_node_round_trip(netns):
    assert read_node(netns) == NodeState.build()
    for desired in (NODE1, NODE2, NODE1, NodeState.build()):
        plan = plan_node(read_node(netns), desired)
        netns.apply(plan)
        assert read_node(netns) == desired, plan.summary()
        assert plan_node(read_node(netns), desired).is_empty
    assert "7101" not in netns.run(["ip", "rule", "show"]).stdout


def test_node_repairs_missing_route(netns):
    netns.apply(plan_node(None, NODE1))
    netns.run(["ip", "route", "del", "default", "table", "7102"])
    plan = plan_node(read_node(netns), NODE1)
    assert plan.pre_ip == ["route replace default via 198.18.0.6 table 7102 proto 250"]
    netns.apply(plan)
    assert read_node(netns) == NODE1


def test_node_marks_only_slot_bits(netns):
    netns.apply(plan_node(None, NODE1))
    listing = netns.run(["nft", "list", "chain", "ip", "egressportal", "mark_slot_1"]).stdout
    # nft folds the constant mask; the effect is the same: only 0x00ff0000 changes.
    assert "meta mark set meta mark & 0xff01ffff | 0x00010000" in listing


# --- the reads: one ip process per family -----------------------------------------------------------------


def _one_by_one(ns: Netns, read: HostRead) -> list[str]:
    """The answer of each line of an ip batch, run as a command of its own."""
    flags = list(read.argv[:4])  # ip -N -j -4|-6
    return [ns.run([*flags, *line.split()]).stdout.strip() for line in read.stdin.splitlines()]


@pytest.mark.parametrize("role", ["gateway", "node"])
def test_a_batch_answers_each_line_as_its_command_alone_does(netns, role):
    # iproute2 6.1: one JSON document per line of the batch, the same as the command run on its own (with
    # state in every answer: addresses, pool and return routes, rules, an IPv6 proxy entry).
    if role == "gateway":
        netns.apply(plan_gateway(None, GW2))
        netns.run(["ip", "-6", "neigh", "add", "proxy", "2001:db8::5", "dev", "eth0", "proto", "250"])
        reads = gateway_read_commands("eth0")
    else:
        netns.apply(plan_node(None, NODE1))
        reads = node_read_commands()
    for name, read in reads.items():
        if read.parts:
            r = netns.run(list(read.argv), read.stdin)
            assert r.stdout.split("\n") == [*_one_by_one(netns, read), ""], name
    state = read_gateway(netns) if role == "gateway" else read_node(netns)
    # The same state as parse_gateway/parse_node make of the commands run one by one.
    if role == "gateway":
        addr, routes = _one_by_one(netns, reads["ip4"])
        addr6, routes6, proxy6 = _one_by_one(netns, reads["ip6"])
        one_by_one = parse_gateway(
            _nft(netns, list(reads["nft"].argv)), addr, routes, "eth0", arp_json=_nft(netns, list(reads["arp"].argv)),
            addr6_json=addr6, route6_json=routes6, proxy6_json=proxy6,
        )  # fmt: skip
        assert state == one_by_one and state.addresses == GW2.addresses | {ip_address("2001:db8::5")}
    else:
        rules, routes = _one_by_one(netns, reads["ip4"])
        assert state == parse_node(_nft(netns, list(reads["nft"].argv)), rules, routes) == NODE1


def test_a_read_of_an_interface_that_is_not_there_fails_as_a_whole(netns):
    # The IPv4 batch stops at "addr show dev eth7" (exit status 1): the read fails, never an empty state.
    reads = gateway_read_commands("eth7")
    with pytest.raises(DataplaneParseError, match='ip -N -j -4 failed: Device "eth7" does not exist'):
        read_host(netns, reads, "eth7")


@pytest.mark.parametrize("role", ["gateway", "node"])
def test_the_reads_one_at_a_time_give_the_same_state(netns, role):
    # As the sudo path runs them (workers/reconcile.py _read_outputs): each argv with its stdin, no shell.
    netns.apply(plan_gateway(None, GW1) if role == "gateway" else plan_node(None, NODE1))
    reads = gateway_read_commands("eth0") if role == "gateway" else node_read_commands()
    outputs = {}
    for name, read in reads.items():
        r = netns.run(list(read.argv), read.stdin, check=False)
        outputs[name] = (r.returncode, r.stdout if r.returncode == 0 else r.stderr)
    iface = "eth0" if role == "gateway" else None
    assert parse_host_reads(reads, outputs, public_interface=iface) == read_host(netns, reads, iface)
    assert read_host(netns, reads, iface) == (GW1 if role == "gateway" else NODE1)
