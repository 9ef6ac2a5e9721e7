"""Turn what a host reports (``nft -j``, ``ip -j``) back into a GatewayState/NodeState.

The parsed state is the host's *effective* behaviour: a map whose chain rule was edited or deleted does not
steer or SNAT anything, so it parses as empty and the next plan rewrites the table. Anything that is not
the JSON shape nft/iproute2 produce raises DataplaneParseError, never a KeyError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, collapse_addresses, summarize_address_range
from typing import Any

from . import validate as v
from .model import (
    MARK_MASK,
    NFT_ARP_FAMILY,
    NFT_FAMILY,
    NFT_FAMILY6,
    NFT_TABLE,
    RT_PROTO,
    RT_TABLE_LOCAL,
    TABLE_BASE,
    UNROUTED,
    UNROUTED6,
    GatewayState,
    IPAddress,
    IPNetwork,
    NodeState,
    slot_mark,
    uncovered,
)
from .render import EXEC_SECTION, KEEP_MASK, HostRead

__all__ = [
    "DataplaneParseError",
    "exec_results",
    "gateway_read_commands",
    "host_read_texts",
    "probe_gateway_links_command",
    "probe_node_command",
    "table_exists_command",
    "is_missing_table_error",
    "node_read_commands",
    "parse_exec_output",
    "parse_gateway",
    "parse_host_reads",
    "parse_node",
]

NFT_READ_ARGV = ["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE]
NFT6_READ_ARGV = ["nft", "-j", "list", "table", NFT_FAMILY6, NFT_TABLE]
NFT_ARP_READ_ARGV = ["nft", "-j", "list", "table", NFT_ARP_FAMILY, NFT_TABLE]


@dataclass(frozen=True)
class _Family:
    version: int
    nft_family: str
    nft_type: str  # set/map key type
    proto: str  # payload protocol
    addr_family: str  # "family" of ip addr_info
    host_len: int
    address: Any  # strict validator of one address
    network: Any  # strict validator of one network
    unrouted: IPAddress


_V4 = _Family(4, NFT_FAMILY, "ipv4_addr", "ip", "inet", 32, v.ipv4_address, v.ipv4_network, UNROUTED)
_V6 = _Family(6, NFT_FAMILY6, "ipv6_addr", "ip6", "inet6", 128, v.ipv6_address, v.ipv6_network, UNROUTED6)


class DataplaneParseError(v.DataplaneValueError):
    """A host reported something that is not valid nft/ip JSON of the expected shape."""


def _ip_batch(version: int, lines: Mapping[str, str]) -> HostRead:
    # One ip process per family: iproute2 prints each line's answer as one JSON document on a line of its
    # own, and stops at the first line that fails (exit status 1: the whole read fails, as one command's
    # would). -N: numeric protocol/table ids, independent of the host's /etc/iproute2 name files.
    return HostRead(
        argv=("ip", "-N", "-j", f"-{version}", "-batch", "-"),
        stdin="".join(f"{line}\n" for line in lines.values()),
        parts=tuple(lines),
    )


def gateway_read_commands(public_interface: str) -> dict[str, HostRead]:
    """The reads of a gateway (parse_host_reads turns their answers into the inputs of parse_gateway).
    "nft", "arp" and "nft6" may fail with a missing table (is_missing_table_error); "ndp" may fail (a host
    without IPv6 has no such keys: proxy NDP is off)."""
    iface = v.interface_name(public_interface)
    return {
        "nft": HostRead(tuple(NFT_READ_ARGV)),
        "arp": HostRead(tuple(NFT_ARP_READ_ARGV)),
        "nft6": HostRead(tuple(NFT6_READ_ARGV)),
        # Every table: the return routes (main) and the anyIP pool routes (local).
        "ip4": _ip_batch(4, {"addr": f"addr show dev {iface}", "routes": f"route show table all proto {RT_PROTO}"}),
        "ip6": _ip_batch(
            6,
            {
                "addr6": f"addr show dev {iface}",
                "routes6": f"route show table all proto {RT_PROTO}",
                # The IPv6 egress addresses: proxy NDP entries (ours: proto 250), answered only while proxy
                # NDP is on.
                "proxy6": f"neigh show proxy dev {iface}",
            },
        ),
        # A process, not the shell's read builtin: /proc/sys answers nothing at an offset past 0, and dash
        # reads one byte at a time (proxy_delay 80 would read as "8", and as a failure).
        "ndp": HostRead(
            ("sysctl", "-n", f"net/ipv6/conf/{iface}/proxy_ndp", f"net/ipv6/neigh/{iface}/proxy_delay")
        ),
    }


def node_read_commands() -> dict[str, HostRead]:
    """The reads of a node (parse_host_reads turns their answers into the inputs of parse_node; "routes" is
    passed as ``route_json_by_table`` directly)."""
    proto = f"route show table all proto {RT_PROTO}"
    return {
        "nft": HostRead(tuple(NFT_READ_ARGV)),
        "nft6": HostRead(tuple(NFT6_READ_ARGV)),
        "ip4": _ip_batch(4, {"rules": "rule show", "routes": proto}),
        "ip6": _ip_batch(6, {"rules6": "rule show", "routes6": proto}),
    }


def parse_exec_output(text: str) -> list[tuple[str, int, str]]:
    """(section name, exit status, output) of each command a ``render_exec_script`` script ran, in order."""
    parts = text.split(f"\n{EXEC_SECTION}")
    if len(parts) < 2 or parts[-1].strip().count("\n") > 0:
        raise DataplaneParseError("the host's answer to the reconcile script is garbled")
    sections: list[tuple[str, int, str]] = []
    body = parts[0]
    for part in parts[1:]:
        head, _, rest = part.partition("\n")
        name, _, status = head.partition(" ")
        try:
            sections.append((name, int(status), body))
        except ValueError:
            raise DataplaneParseError("the host's answer to the reconcile script is garbled") from None
        body = rest
    return sections


def exec_results(text: str, *, steps: int) -> tuple[list[tuple[int, int, str]], dict[str, tuple[int, str]]]:
    """The answer of a ``render_exec_script`` script with ``steps`` apply steps: (index, status, output) of
    each step that ran, in order, and (status, output) by read name. A section the script never writes, out
    of order or twice, is garbled."""
    applied: list[tuple[int, int, str]] = []
    reads: dict[str, tuple[int, str]] = {}
    for name, status, body in parse_exec_output(text):
        kind, _, which = name.partition(":")
        if kind == "apply" and not reads and len(applied) < steps and which == str(len(applied)):
            applied.append((len(applied), status, body))
        elif kind == "read" and which not in reads:
            reads[which] = (status, body)
        else:
            raise DataplaneParseError("the host's answer to the reconcile script is garbled")
    return applied, reads


def table_exists_command(version: int = 4) -> list[str]:
    """Exits 0 exactly when the product's nft table of that family (4: ip, 6: ip6) exists on the host."""
    return list(NFT_READ_ARGV if version == 4 else NFT6_READ_ARGV)


def probe_gateway_links_command() -> list[str]:
    """The health probe of a gateway: its IPv4 links and addresses (judged by the health rules)."""
    return ["ip", "-j", "-4", "addr", "show"]


def probe_echo_command() -> list[str]:
    """The prober's liveness channel: a process that sends back every byte it gets, as soon as it gets it
    (``cat`` writes what each read returns, unbuffered). An echoed byte proves the host's kernel, its
    network path and its sshd session are alive."""
    return ["cat"]


def probe_node_command() -> list[str]:
    """The health probe of a node: answering a command at all is what counts."""
    return ["true"]


def is_missing_table_error(stderr: str) -> bool:
    """True when ``nft list table`` failed only because our table does not exist (nothing applied yet)."""
    return "No such file or directory" in stderr


# --- JSON helpers -------------------------------------------------------------------------------------


def _load(text: str | None, what: str) -> Any:
    try:
        return json.loads(text) if text and text.strip() else None
    except (json.JSONDecodeError, TypeError) as exc:
        raise DataplaneParseError(f"{what}: not JSON: {exc}") from None


def _default(doc: Any) -> Any:
    # Empty output means "nothing"; an empty object or a number is garbage and must not pass as "nothing".
    return [] if doc is None else doc


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataplaneParseError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DataplaneParseError(f"{what}: expected a list, got {type(value).__name__}")
    return value


def _checked(fn: Any, value: Any, what: str) -> Any:
    try:
        return fn(value)
    except v.DataplaneValueError as exc:
        raise DataplaneParseError(f"{what}: {exc}") from None


def _int(value: Any, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        return value if isinstance(value, int) else int(str(value), 0)
    except ValueError:
        raise DataplaneParseError(f"{what}: not an integer: {value!r}") from None


# --- nft ----------------------------------------------------------------------------------------------


class _Table:
    def __init__(self, nft_json: str | None, family: str = NFT_FAMILY) -> None:
        self.sets: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, list[list[Any]]] = {}
        self.exists = False
        doc = _load(nft_json, "nft output")
        if doc is None:
            return
        for item in _list(_obj(doc, "nft output").get("nftables"), "nft output.nftables"):
            (kind, body), *extra = _obj(item, "nft object").items() or [(None, None)]
            if extra or kind is None:
                raise DataplaneParseError(f"nft object with unexpected keys: {sorted(item)}")
            if kind == "metainfo":
                continue
            body = _obj(body, f"nft {kind}")
            if body.get("family") != family or body.get("table", body.get("name")) != NFT_TABLE:
                raise DataplaneParseError(f"nft {kind} outside table {family} {NFT_TABLE}")
            if kind == "table":
                self.exists = True
            elif kind in ("set", "map"):
                self.sets[str(body.get("name"))] = {**body, "_kind": kind}
            elif kind == "chain":
                self.chains[str(body.get("name"))] = body
            elif kind == "rule":
                expr = _list(body.get("expr"), "nft rule.expr")
                self.rules.setdefault(str(body.get("chain")), []).append(expr)
            # Other objects (counters, flowtables) are not ours to interpret; the chain checks below
            # decide whether the table still does what we rendered.

    def only_rule(self, chain: str, hook: dict[str, Any] | None) -> list[Any] | None:
        body = self.chains.get(chain)
        if body is None:
            return None
        got_hook = {k: body.get(k) for k in ("type", "hook", "prio", "policy") if k in body}
        if got_hook != (hook or {}):
            return None
        rules = self.rules.get(chain, [])
        return rules[0] if len(rules) == 1 else None

    def elements(self, name: str, kind: str, key_type: str, data_type: str | None) -> list[Any] | None:
        body = self.sets.get(name)
        if body is None or body["_kind"] != kind or body.get("type") != key_type:
            return None
        if kind == "map" and body.get("map") != data_type:
            return None
        return _list(body.get("elem", []), f"nft {name}.elem")


def _unwrap(elem: Any) -> Any:
    # Elements with timeouts/counters come as {"elem": {"val": ..., ...}}.
    if isinstance(elem, dict) and "elem" in elem:
        return _obj(elem["elem"], "nft elem").get("val")
    return elem


def _nets(elem: Any, what: str, fam: _Family = _V4) -> list[IPNetwork]:
    elem = _unwrap(elem)
    if isinstance(elem, str):
        return [_checked(fam.network, elem, what)]
    if isinstance(elem, dict) and "prefix" in elem:
        p = _obj(elem["prefix"], what)
        addr = p.get("addr")
        length = _int(p.get("len"), what)
        return [_checked(fam.network, f"{addr}/{length}", what)]
    if isinstance(elem, dict) and "range" in elem:
        bounds = _list(elem["range"], what)
        if len(bounds) != 2:
            raise DataplaneParseError(f"{what}: bad range {bounds!r}")
        lo, hi = (_checked(fam.address, b, what) for b in bounds)
        if lo > hi:
            raise DataplaneParseError(f"{what}: bad range {bounds!r}")
        # An exact CIDR gives one network; any other range is the list of CIDRs it covers.
        # Both of one family (validated): summarize_address_range never mixes them.
        return list(summarize_address_range(lo, hi))  # type: ignore[arg-type]
    raise DataplaneParseError(f"{what}: unexpected element {elem!r}")


def _set_nets(table: _Table, name: str, fam: _Family = _V4) -> frozenset[IPNetwork] | None:
    elems = table.elements(name, "set", fam.nft_type, None)
    if elems is None:
        return None
    what = f"nft set {name}"
    nets: list[IPNetwork] = []
    for e in elems:
        if type(e) is str:  # an address or CIDR (most elements): one network, as _nets gives it
            nets.append(_checked(fam.network, e, what))
        else:
            nets += _nets(e, what, fam)
    return frozenset(nets)


def _set_addresses(table: _Table, name: str, memo: dict[str, IPv4Address]) -> set[IPv4Address]:
    """The single IPv4 addresses of a set (a gateway's record of what it holds): parsed as addresses, not
    networks, and each text once (``memo``: the SNAT map's values are the same texts)."""
    found: set[IPv4Address] = set()
    for e in table.elements(name, "set", "ipv4_addr", None) or []:
        e = _unwrap(e)
        if isinstance(e, str):
            if e not in memo:
                memo[e] = _checked(v.ipv4_address, e, f"nft set {name}")
            found.add(memo[e])
        else:
            found.update(n.network_address for n in _nets(e, f"nft set {name}") if n.prefixlen == 32)
    return found


def _map_pairs(table: _Table, name: str, data_type: str, fam: _Family = _V4) -> list[tuple[IPNetwork, Any]] | None:
    elems = table.elements(name, "map", fam.nft_type, data_type)
    if elems is None:
        return None
    pairs = []
    what = f"nft map {name} key"
    for e in elems:
        if type(e) is list and len(e) == 2 and type(e[0]) is str:  # [text, value]: most elements, as below
            pairs.append((_checked(fam.network, e[0], what), e[1]))
            continue
        pair = _list(_unwrap(e), f"nft map {name} element")
        if len(pair) != 2:
            raise DataplaneParseError(f"nft map {name}: bad element {e!r}")
        pairs += [(n, pair[1]) for n in _nets(pair[0], what, fam)]
    return pairs


def _saddr(field: str, proto: str = "ip") -> dict[str, Any]:
    return {"payload": {"protocol": proto, "field": field}}


def _match(op: str, left: dict[str, Any], right: Any) -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _oif(iface: str) -> dict[str, Any]:
    return _match("==", {"meta": {"key": "oifname"}}, iface)


# Chain headers and rules exactly as nft 1.0.x lists what render.py writes.
_POSTROUTING_HOOK = {"type": "nat", "hook": "postrouting", "prio": 90, "policy": "accept"}
_FORWARD_HOOK = {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}
_PREROUTING_HOOK = {"type": "filter", "hook": "prerouting", "prio": -150, "policy": "accept"}
_ARP_INPUT_HOOK = {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"}


def _arp(field: str) -> dict[str, Any]:
    return {"payload": {"protocol": "arp", "field": field}}


_ARP_GUARD_RULE = [
    _match("==", _arp("operation"), "request"),
    _match("==", _arp("daddr ip"), "@pool_prefixes"),
    _match("!=", _arp("daddr ip"), "@egress_addresses"),
    {"drop": None},
]


def _snat_rule(iface: str, proto: str = "ip") -> list[Any]:
    return [_oif(iface), {"snat": {"addr": {"map": {"key": _saddr("saddr", proto), "data": "@snat_by_source"}}}}]


def _guard_rule(iface: str, proto: str = "ip") -> list[Any]:
    return [
        _oif(iface),
        _match("==", _saddr("saddr", proto), "@guarded_sources"),
        _match("!=", _saddr("saddr", proto), "@mapped_sources"),
        {"drop": None},
    ]


def _steer_rule(proto: str) -> list[Any]:
    return [
        _match("!=", _saddr("daddr", proto), "@internal"),
        {"vmap": {"key": _saddr("saddr", proto), "data": "@mark_by_source"}},
    ]


_STEER_RULE = _steer_rule("ip")


def _slot_chain_ok(table: _Table, slot: int) -> bool:
    rule = table.only_rule(f"mark_slot_{slot}", None)
    if rule is None or len(rule) != 1:
        return False
    try:
        mangle = rule[0]["mangle"]
        if mangle["key"] != {"meta": {"key": "mark"}}:
            return False
        (and_expr, or_value) = mangle["value"]["|"]
        (mark_expr, and_value) = and_expr["&"]
        if mark_expr != {"meta": {"key": "mark"}}:
            return False
    except (KeyError, TypeError, ValueError):
        return False
    and_value, or_value = _int(and_value, "mark mask"), _int(or_value, "mark value")
    # nft folds "& 0xff00ffff | 0x10000" into "& 0xff01ffff | 0x10000"; compare what the rule does.
    want = slot_mark(slot)
    return or_value == want and (and_value | or_value) == (KEEP_MASK | want)


# --- gateway ------------------------------------------------------------------------------------------


def _gateway_addresses(addr_json: str, iface: str, fam: _Family = _V4) -> set[IPAddress]:
    links = _list(_default(_load(addr_json, "ip addr output")), "ip addr output")
    found: set[IPAddress] = set()
    for link in links:
        link = _obj(link, "ip addr link")
        if link.get("ifname") != iface:
            continue
        for info in _list(link.get("addr_info", []), "ip addr addr_info"):
            info = _obj(info, "ip addr addr_info")
            # Only single addresses can be ours (link-local fe80::/64 and the segment's own prefix are not).
            if info.get("family") == fam.addr_family and _int(info.get("prefixlen"), "prefixlen") == fam.host_len:
                found.add(_checked(fam.address, info.get("local"), "ip addr local"))
    return found


def _routes(route_json: str | None, what: str) -> list[dict[str, Any]]:
    return [_obj(r, what) for r in _list(_default(_load(route_json, what)), what)]


def _is_pool_route(r: dict[str, Any]) -> bool:
    # As render._pool_route writes it; -N lists the type as its number (RTN_LOCAL = 2).
    return (
        str(r.get("type")) in ("local", "2")
        and str(r.get("table")) in (str(RT_TABLE_LOCAL), "local")
        and r.get("dev") == "lo"
        and "gateway" not in r
    )


@dataclass
class _GatewayFamily:
    addresses: set[IPAddress]
    snat: dict[IPNetwork, IPAddress]  # working entries only
    routes: dict[IPNetwork, IPAddress]
    guarded: frozenset[IPNetwork]
    pools: frozenset[IPNetwork] = frozenset()
    legacy: frozenset[IPAddress] = frozenset()


def _proxy_entries(proxy_json: str | None, iface: str) -> set[IPAddress]:
    """The IPv6 proxy NDP entries of ours (proto 250) on ``iface``."""
    found: set[IPAddress] = set()
    for e in _list(_default(_load(proxy_json, "ip neigh output")), "ip neigh output"):
        e = _obj(e, "ip neigh entry")
        if "proxy" not in e or str(e.get("protocol")) != str(RT_PROTO) or e.get("dev", iface) != iface:
            continue
        found.add(_checked(v.ipv6_address, e.get("dst"), "ip neigh dst"))
    return found


def _ndp_on(ndp_text: str | None) -> bool:
    """Whether the kernel answers solicitations for proxy entries at once (proxy_ndp 1, proxy_delay 0)."""
    return (ndp_text or "").split() == ["1", "0"]


def _gateway_family(
    fam: _Family,
    nft_json: str | None,
    addr_json: str,
    route_json: str,
    iface: str,
    arp_json: str | None = None,
    proxy_json: str | None = None,
    ndp_text: str | None = None,
) -> _GatewayFamily:
    """One family's table and ip state. IPv4 egress addresses are anyIP (pool routes behind the ARP guard,
    ``arp_json``), or /32s of the old layout; IPv6 ones are anyIP (pool routes and a proxy NDP entry each,
    ``proxy_json``, ``ndp_text``), or /128s of the old layout."""
    table = _Table(nft_json, fam.nft_family)
    memo: dict[str, IPv4Address] = {}
    if fam.version == 4:
        arp = _Table(arp_json, NFT_ARP_FAMILY)
        recorded: set[IPAddress] = set(_set_addresses(arp, "egress_addresses", memo))
        # The old layout recorded its /32s in the ip table.
        owned: set[IPAddress] = set(_set_addresses(table, "egress_addresses", memo))
    else:
        recorded = set()
        owned = {n.network_address for n in _set_nets(table, "egress_addresses", fam) or () if n.prefixlen == 128}
    snat_pairs = _map_pairs(table, "snat_by_source", fam.nft_type, fam) or []
    snat = {
        k: memo[x] if isinstance(x, str) and x in memo else _checked(fam.address, x, "nft map snat_by_source value")
        for k, x in snat_pairs
    }
    guarded = _set_nets(table, "guarded_sources", fam) or frozenset()
    mapped = _set_nets(table, "mapped_sources", fam) or frozenset()
    snat_ok = table.only_rule("postrouting", _POSTROUTING_HOOK) == _snat_rule(iface, fam.proto)
    guard_ok = table.only_rule("forward", _FORWARD_HOOK) == _guard_rule(iface, fam.proto)
    if not snat_ok:
        snat = {}
    # The guard is only as good as its rule and its copy of the map keys; if either is off, report it
    # as absent so a desired guard forces a rewrite (never report a leak as guarded).
    if not (snat_ok and guard_ok and mapped == frozenset(snat)):
        guarded = frozenset()
    on_iface = (owned | recorded) & _gateway_addresses(addr_json, iface, fam)
    routes: dict[IPNetwork, IPAddress] = {}
    pool_routes: set[IPNetwork] = set()
    for r in _routes(route_json, "ip route output"):
        if _is_pool_route(r):
            pool_routes.add(_checked(fam.network, r.get("dst"), "ip route dst"))
            continue
        if r.get("dst") in (None, "default") or "gateway" not in r:
            continue  # not a shape we write (multipath, blackhole, default): not ours to manage
        if str(r.get("table", "254")) not in ("254", "main"):
            continue
        dst = _checked(fam.network, r["dst"], "ip route dst")
        routes.setdefault(dst, _checked(fam.address, r["gateway"], "ip route gateway"))
    if fam.version == 6:
        # A proxy entry answers solicitations (and SNAT to its address works, conntrack de-NATs the replies
        # before routing) whether or not a pool route covers it: it counts as held, so a stray one is seen
        # and removed. The pool routes count only while proxy NDP is on: a reset sysctl makes the next plan
        # re-add them, and set it again.
        pools6 = frozenset(collapse_addresses(pool_routes)) if _ndp_on(ndp_text) else frozenset()  # type: ignore[arg-type]
        held6 = on_iface | _proxy_entries(proxy_json, iface)
        return _GatewayFamily(
            held6, {k: x for k, x in snat.items() if x in held6}, routes, guarded, pools6, frozenset(on_iface)
        )
    pools = frozenset(collapse_addresses(pool_routes))
    # Pool addresses count as held only behind an intact ARP guard that covers exactly the pool routes:
    # otherwise the gateway answers ARP for other gateways' addresses too, and reporting them absent makes
    # the next plan rewrite the guard (as with the SNAT guard above).
    guard_pools = _set_nets(arp, "pool_prefixes")
    arp_ok = (
        arp.only_rule("input", _ARP_INPUT_HOOK) == _ARP_GUARD_RULE
        and guard_pools is not None
        and frozenset(collapse_addresses(guard_pools)) == pools  # type: ignore[arg-type]
    )
    anyip = recorded.difference(uncovered(recorded, pools)) if arp_ok else set()
    legacy = frozenset(on_iface)  # type: ignore[arg-type]
    addresses = set(legacy) | anyip
    # SNAT to an address the host does not hold does not work: report only working entries.
    return _GatewayFamily(addresses, {k: x for k, x in snat.items() if x in addresses}, routes, guarded, pools, legacy)


def parse_gateway(
    nft_json: str | None,
    addr_json: str,
    route_json: str,
    public_interface: str,
    *,
    nft6_json: str | None = None,
    addr6_json: str | None = None,
    route6_json: str | None = None,
    arp_json: str | None = None,
    proxy6_json: str | None = None,
    ndp_text: str | None = None,
) -> GatewayState:
    """The IPv4 part from ``nft``/``arp``/``addr``/``routes`` of gateway_read_commands, the IPv6 part from
    ``nft6``, ``addr6``, ``routes6``, ``proxy6``, ``ndp`` (None or empty: no IPv6 state, proxy NDP off;
    ``arp_json`` None: no ARP guard)."""
    iface = v.interface_name(public_interface)
    four = _gateway_family(_V4, nft_json, addr_json, route_json, iface, arp_json)
    six = _gateway_family(_V6, nft6_json, addr6_json or "[]", route6_json or "[]", iface, None, proxy6_json, ndp_text)
    try:
        return GatewayState.build(
            public_interface=iface,
            addresses=four.addresses | six.addresses,
            snat={**four.snat, **six.snat},
            return_routes={**four.routes, **six.routes},
            guarded_sources=four.guarded | six.guarded,
            pools=four.pools | six.pools,
            legacy_addresses=four.legacy | six.legacy,
        )
    except v.DataplaneValueError as exc:
        raise DataplaneParseError(f"gateway state: {exc}") from None


# --- node ---------------------------------------------------------------------------------------------


def _rule_slot(rule: dict[str, Any]) -> int | None:
    """The slot of one of our canonical ip rules, else None (not ours, or not a shape we write)."""
    if str(rule.get("protocol")) != str(RT_PROTO):
        return None
    if set(rule) - {"priority", "src", "fwmark", "fwmask", "table", "protocol"} or rule.get("src") != "all":
        return None
    prio = _int(rule.get("priority"), "rule priority")
    slot = prio - TABLE_BASE
    if not 1 <= slot <= v.MAX_SLOT:
        return None
    if (
        _int(rule.get("table"), "rule table") != prio
        or _int(rule.get("fwmark"), "rule fwmark") != slot_mark(slot)
        or _int(rule.get("fwmask"), "rule fwmask") != MARK_MASK
    ):
        return None
    return slot


def _node_steering(fam: _Family, nft_json: str | None) -> tuple[dict[IPNetwork, int], frozenset[IPNetwork]]:
    table = _Table(nft_json, fam.nft_family)
    steering: dict[IPNetwork, int] = {}
    if table.only_rule("prerouting", _PREROUTING_HOOK) == _steer_rule(fam.proto):
        for net, verdict in _map_pairs(table, "mark_by_source", "verdict", fam) or []:
            target = verdict.get("goto", {}).get("target") if isinstance(verdict, dict) else None
            prefix = "mark_slot_"
            if not (isinstance(target, str) and target.startswith(prefix) and target[len(prefix):].isdigit()):
                continue  # a verdict we never write: the source is not steered by us
            slot = int(target[len(prefix):])
            if 1 <= slot <= v.MAX_SLOT and _slot_chain_ok(table, slot):
                steering[net] = slot
    return steering, _set_nets(table, "internal", fam) or frozenset()


def _node_gateways(
    fam: _Family, rule_json: str, route_json_by_table: Mapping[int, str] | str
) -> dict[int, IPAddress]:
    rule_slots = set()
    for r in _list(_default(_load(rule_json, "ip rule output")), "ip rule output"):
        slot = _rule_slot(_obj(r, "ip rule"))
        if slot is not None:
            rule_slots.add(slot)

    sources = [(None, route_json_by_table)] if isinstance(route_json_by_table, str) else list(
        route_json_by_table.items()
    )
    via_by_slot: dict[int, IPAddress] = {}
    for key, text in sources:
        for r in _routes(text, "ip route output"):
            if r.get("dst") != "default" or "gateway" not in r or r.get("type", "unicast") != "unicast":
                continue
            if "table" not in r and key is None:
                continue  # main table in a "table all" listing
            slot = _int(r.get("table", key), "route table") - TABLE_BASE
            if 1 <= slot <= v.MAX_SLOT:
                via_by_slot.setdefault(slot, _checked(fam.address, r["gateway"], "ip route gateway"))

    # A rule without a route is reported as UNROUTED (so the plan re-adds the route, not the rule,
    # which would fail with "File exists"); a route without its rule steers nothing and is left out.
    return {s: via_by_slot.get(s, fam.unrouted) for s in rule_slots}


def parse_node(
    nft_json: str | None,
    rule_json: str,
    route_json_by_table: Mapping[int, str] | str,
    *,
    nft6_json: str | None = None,
    rule6_json: str | None = None,
    route6_json: str | None = None,
) -> NodeState:
    """``route_json_by_table``: ``{table: ip -j route show table N}``, or one ``table all`` output. The IPv6
    part comes from ``nft6``/``rules6``/``routes6`` of node_read_commands (None or empty: none)."""
    steering, internal = _node_steering(_V4, nft_json)
    steering6, internal6 = _node_steering(_V6, nft6_json)
    gateways = _node_gateways(_V4, rule_json, route_json_by_table)
    gateways6 = _node_gateways(_V6, rule6_json or "[]", route6_json or "[]")
    # Marked traffic whose slot has no rule falls through to the main table: not steered, in effect.
    steering = {k: s for k, s in steering.items() if s in gateways}
    steering6 = {k: s for k, s in steering6.items() if s in gateways6}
    try:
        return NodeState.build(
            steering={**steering, **steering6},
            gateways=gateways,
            internal=internal | internal6,
            gateways6=gateways6,
        )
    except v.DataplaneValueError as exc:
        raise DataplaneParseError(f"node state: {exc}") from None


def _batch_parts(read: HostRead, text: str) -> dict[str, str]:
    # Exactly one non-empty line per command: a missing, extra or empty line (output of something else, a
    # truncated answer) is garbled, never "nothing"; each line is then parsed as the JSON its command gives.
    lines = text.split("\n")
    if len(lines) != len(read.parts) + 1 or lines[-1] or not all(line.strip() for line in lines[:-1]):
        raise DataplaneParseError(
            f"{' '.join(read.argv)}: expected {len(read.parts)} lines of JSON, one per command; got {text[:300]!r}"
        )
    return dict(zip(read.parts, lines[:-1], strict=True))


def host_read_texts(
    reads: Mapping[str, HostRead], outputs: Mapping[str, tuple[int, str]]
) -> dict[str, str | None]:
    """The inputs of parse_gateway/parse_node by name (a batch's lines under their ``parts`` names) from the
    answers (status, text) to ``reads``. A missing product table or proxy NDP key is None; any other failed
    read, or an answer that does not match the reads asked, raises DataplaneParseError."""
    if set(outputs) != set(reads):
        raise DataplaneParseError("the host's answer to the state read is garbled")
    out: dict[str, str | None] = {}
    for name, read in reads.items():
        status, text = outputs[name]
        if status == 0:
            out.update(_batch_parts(read, text) if read.parts else {name: text})
        elif name in ("nft", "nft6", "arp") and is_missing_table_error(text) or name == "ndp":
            out[name] = None
        else:
            # The message, not the answers a batch gave before the line that failed.
            message = "\n".join(line for line in text.strip().splitlines() if not line.startswith(("[", "{")))
            raise DataplaneParseError(f"{' '.join(read.argv[:4])} failed: {message[:300]}")
    return out


def parse_host_reads(
    reads: Mapping[str, HostRead], outputs: Mapping[str, tuple[int, str]], *, public_interface: str | None
) -> GatewayState | NodeState:
    """A host's state from the answers (status, text) to ``gateway_read_commands`` (``public_interface``
    given) or ``node_read_commands`` (None): see host_read_texts."""
    out = host_read_texts(reads, outputs)
    if public_interface is not None:
        return parse_gateway(
            out["nft"], out["addr"] or "[]", out["routes"] or "[]", public_interface,
            nft6_json=out["nft6"], addr6_json=out["addr6"], route6_json=out["routes6"], arp_json=out["arp"],
            proxy6_json=out.get("proxy6"), ndp_text=out.get("ndp"),
        )  # fmt: skip
    return parse_node(
        out["nft"], out["rules"] or "[]", out["routes"] or "[]",
        nft6_json=out["nft6"], rule6_json=out["rules6"], route6_json=out["routes6"],
    )  # fmt: skip
