"""The one place that renders dataplane configuration: nft scripts, ``ip`` commands and apply plans."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network
from shlex import quote as shlex_quote
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
    UNROUTED,
    UNROUTED6,
    GatewayState,
    IPAddress,
    IPNetwork,
    NodeState,
    by_family,
    slot_mark,
    slot_table,
    uncovered,
)

__all__ = [
    "ANNOUNCE_MAX",
    "ANNOUNCE_SCRIPT",
    "NA_SENDER",
    "announce_argv",
    "ndp_sysctl_argv",
    "EXEC_ARGV",
    "EXEC_SECTION",
    "HostRead",
    "NFT_APPLY_ARGV",
    "IP_BATCH_ARGV",
    "IP6_BATCH_ARGV",
    "Plan",
    "gateway_has_ipv6",
    "node_has_ipv6",
    "ip_batch_script",
    "plan_gateway",
    "plan_gateway_decommission",
    "plan_node",
    "render_gateway_ip",
    "render_gateway_nft",
    "render_node_ip",
    "render_node_nft",
    "render_exec_script",
]

NFT_APPLY_ARGV = ["nft", "-f", "-"]
# No -force: the batch stops at the first failing line, so a failed "make" never proceeds to "break".
IP_BATCH_ARGV = ["ip", "-batch", "-"]
# IPv6 addresses, routes and rules: a batch line cannot carry "-6", and "ip rule" without it is IPv4.
IP6_BATCH_ARGV = ["ip", "-6", "-batch", "-"]

# srcnat - 10: run before other postrouting nat chains (e.g. a masquerade for the node network) so ours wins.
SNAT_PRIORITY = "srcnat - 10"
KEEP_MASK = 0xFFFFFFFF & ~MARK_MASK

_TABLE = f"{NFT_FAMILY} {NFT_TABLE}"
_TABLE6 = f"{NFT_FAMILY6} {NFT_TABLE}"
_ARP_TABLE = f"{NFT_ARP_FAMILY} {NFT_TABLE}"
# Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for addresses new on a gateway, so
# an upstream router with a stale entry (the address was on another gateway a moment ago) switches at once.
# Best effort: never fails the apply (no sender, or a router that ignores it, only means the router finds out
# when its entry goes stale). iputils arping -U waits a second after its one packet: the exec script starts
# this in the background once the host is read back (render_exec_script), so nothing waits for it.
# Arguments: the NA sender's code, the interface, addresses (validated: digits, dots, hex and colons only, so
# the unquoted $v4/$v6 split on spaces alone).
ANNOUNCE_SCRIPT = (
    'na=$1; iface=$2; shift 2; v4=; v6=; '
    'for a in "$@"; do case $a in *:*) v6="$v6 $a";; *) v4="$v4 $a";; esac; done; '
    'if [ -n "$v4" ] && command -v arping >/dev/null 2>&1; then '
    '(for a in $v4; do arping -q -U -c 1 -I "$iface" "$a" & done) </dev/null >/dev/null 2>&1 & fi; '
    'if [ -n "$v6" ] && command -v python3 >/dev/null 2>&1; then '
    'python3 -c "$na" "$iface" $v6 </dev/null >/dev/null 2>&1 & fi; exit 0'
)
# The unsolicited neighbour advertisement (RFC 4861 7.2.6: to all-nodes, hop limit 255, Override set, the
# target's link-layer address option) for IPv6 addresses new on the gateway. No packaged tool on the hosts
# sends one (ndisc6 solicits, arping is IPv4 only, the kernel announces only interface addresses, not proxy
# entries), so a raw ICMPv6 socket in Python's standard library does; the kernel fills in the checksum.
# argv: interface, addresses. 0x8927: SIOCGIFHWADDR (the interface's MAC at bytes 18..24 of the ifreq).
NA_SENDER = (  # one line: every argv token of the exec script is a single-line string
    "import fcntl,socket as S,struct,sys; i=sys.argv[1]; s=S.socket(S.AF_INET6,S.SOCK_RAW,S.IPPROTO_ICMPV6); "
    "s.setsockopt(S.IPPROTO_IPV6,S.IPV6_MULTICAST_HOPS,255); "
    "m=fcntl.ioctl(s.fileno(),0x8927,struct.pack('256s',i.encode()))[18:24]; x=S.if_nametoindex(i); "
    "[s.sendto(bytes([136,0,0,0,32,0,0,0])+S.inet_pton(S.AF_INET6,a)+bytes([2,1])+m,('ff02::1',0,0,x)) "
    "for a in sys.argv[2:]]"
)
# A bulk change (a restore after a reboot, a burst of enables) is mostly addresses the router never saw, or
# saw on this very gateway: announcing a bounded number keeps the gateway from forking thousands of arpings.
ANNOUNCE_MAX = 64
_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.:/-]+")


@dataclass(frozen=True)
class _Family:
    """What differs between the IPv4 and the IPv6 rendering of the same dataplane."""

    version: int
    table: str  # nft "family name"
    nft_type: str  # nft set/map key type
    proto: str  # nft payload protocol
    host_len: int  # prefix length of one address


_V4 = _Family(4, _TABLE, "ipv4_addr", "ip", 32)
_V6 = _Family(6, _TABLE6, "ipv6_addr", "ip6", 128)


def _net(n: IPNetwork) -> str:
    return (v.ipv4_network(n) if n.version == 4 else v.ipv6_network(n)).with_prefixlen


def _addr(a: IPAddress) -> str:
    return str(v.ipv4_address(a) if a.version == 4 else v.ipv6_address(a))


def gateway_has_ipv6(state: GatewayState) -> bool:
    """Whether the gateway's state needs table ``ip6 egressportal`` (IPv6 addresses, SNAT or guard)."""
    return any(x.version == 6 for x in (*state.addresses, *state.snat, *state.guarded_sources))


def node_has_ipv6(state: NodeState) -> bool:
    """Whether the node's state needs table ``ip6 egressportal`` (IPv6 steering or internal networks)."""
    return any(x.version == 6 for x in (*state.steering, *state.internal))


def _drop_table6() -> str:
    # Works whether or not the table exists, like _replace_table.
    return f"table {_TABLE6} {{}}\ndelete table {_TABLE6}\n"


def _elements(items: Sequence[str], indent: str) -> list[str]:
    # nft rejects "elements = { }"; an empty set simply has no elements line.
    if not items:
        return []
    body = f",\n{indent}             ".join(items)
    return [f"{indent}elements = {{ {body} }}"]


def _key_text(key: IPNetwork | IPAddress) -> str:
    return _net(key) if isinstance(key, (IPv4Network, IPv6Network)) else _addr(key)


def _element(key: IPNetwork | IPAddress, value: IPAddress | int | None) -> str:
    """One element as nft writes it: a set's key, a map's ``key : address``, or a slot's verdict."""
    if value is None:
        return _key_text(key)
    if isinstance(value, int):
        return f"{_key_text(key)} : goto mark_slot_{v.slot(value)}"
    return f"{_key_text(key)} : {_addr(value)}"


def _texts(elements: Mapping[Any, Any]) -> list[str]:
    return [_element(k, x) for k, x in elements.items()]


@dataclass(frozen=True)
class _Set:
    """One set or map of a product table: its declaration and its elements ``{key: value}`` (a set's values
    are None), in the order rendered. The whole table and its element changes both come from these."""

    kind: str  # "set" or "map"
    name: str
    type_line: str
    interval: bool
    elements: Mapping[Any, Any]


def _set_block(s: _Set) -> list[str]:
    lines = [f"  {s.kind} {s.name} {{", f"    type {s.type_line}"]
    if s.interval:
        lines.append("    flags interval")
    lines += _elements(_texts(s.elements), "    ")
    lines.append("  }")
    return lines


def _replace_table(body: list[str], table: str = _TABLE) -> str:
    # "add an empty table, delete it, define it" is one nft transaction that works whether or not the
    # table exists, and leaves no window with a half-written or missing table.
    return "\n".join(
        [f"table {table} {{}}", f"delete table {table}", f"table {table} {{", *body, "}", ""]
    )


def _gateway_sets(state: GatewayState, fam: _Family) -> list[_Set]:
    t = fam.nft_type
    snat = {k: x for k, x in state.snat.items() if k.version == fam.version}
    sets = [
        _Set("map", "snat_by_source", f"{t} : {t}", True, snat),
        # Same keys as the map: lets the forward chain ask "has a mapping?" with a plain set lookup.
        _Set("set", "mapped_sources", t, True, dict.fromkeys(snat)),
    ]
    if fam.version == 6:
        # Records which addresses on the interface are ours, so a reconcile can read back what it added.
        # (IPv4 ones are recorded in the ARP guard: see _arp_sets.)
        sets.append(_Set("set", "egress_addresses", t, False, dict.fromkeys(by_family(state.addresses, 6))))
    sets.append(_Set("set", "guarded_sources", t, True, dict.fromkeys(by_family(state.guarded_sources, fam.version))))
    return sets


def _gateway_table(state: GatewayState, fam: _Family) -> str:
    iface = v.interface_name(state.public_interface)
    p = fam.proto
    body: list[str] = [line for s in _gateway_sets(state, fam) for line in _set_block(s)]
    body += [
        "  chain postrouting {",
        f"    type nat hook postrouting priority {SNAT_PRIORITY}; policy accept;",
        f'    oifname "{iface}" snat {p} to {p} saddr map @snat_by_source',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        # Forward runs before postrouting, so saddr is still the pod address: an unmapped pod source
        # would otherwise leave with its own address.
        f'    oifname "{iface}" {p} saddr @guarded_sources {p} saddr != @mapped_sources drop',
        "  }",
    ]
    return _replace_table(body, fam.table)


def render_gateway_nft(state: GatewayState, *, drop_ipv6: bool = False) -> str:
    """Table ``ip egressportal``, and ``ip6 egressportal`` when the state has IPv6 entries (else, with
    ``drop_ipv6``, the removal of that table), as one nft script (one transaction)."""
    # The ARP guard in the same script: one nft transaction, so it never lags the SNAT it serves.
    script = _gateway_table(state, _V4) + _gateway_arp_table(state)
    if gateway_has_ipv6(state):
        return script + _gateway_table(state, _V6)
    return script + _drop_table6() if drop_ipv6 else script


def _arp_sets(state: GatewayState) -> list[_Set]:
    # The pools are local routes, so the kernel would answer ARP for every address of them, also those
    # another gateway on the segment holds: only this gateway's addresses are answered.
    ours = sorted((a for a in state.addresses if a.version == 4), key=int)  # key=int: 10,000 sort fast
    return [
        _Set("set", "pool_prefixes", "ipv4_addr", True, dict.fromkeys(by_family(state.pools, 4))),
        # Also the record of which IPv4 addresses are ours (read back by a reconcile).
        _Set("set", "egress_addresses", "ipv4_addr", False, dict.fromkeys(ours)),
    ]


def _gateway_arp_table(state: GatewayState) -> str:
    body = [line for s in _arp_sets(state) for line in _set_block(s)]
    body += [
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    arp operation request arp daddr ip @pool_prefixes arp daddr ip != @egress_addresses drop",
        "  }",
    ]
    return _replace_table(body, _ARP_TABLE)


def render_node_nft(state: NodeState, *, drop_ipv6: bool = False) -> str:
    """Like render_gateway_nft: the IPv4 table, then the IPv6 one (or its removal) when there is one."""
    script = _node_table(state, _V4)
    if node_has_ipv6(state):
        return script + _node_table(state, _V6)
    return script + _drop_table6() if drop_ipv6 else script


def _node_sets(state: NodeState, fam: _Family) -> list[_Set]:
    # mark_by_source: a source's slot, rendered as the verdict "goto mark_slot_N" (see _node_table).
    t = fam.nft_type
    steering = {k: s for k, s in state.steering.items() if k.version == fam.version}
    return [
        _Set("map", "mark_by_source", f"{t} : verdict", True, steering),
        _Set("set", "internal", t, True, dict.fromkeys(by_family(state.internal, fam.version))),
    ]


def _slot_rule(s: int) -> str:
    return f"meta mark set meta mark & 0x{KEEP_MASK:08x} | 0x{slot_mark(s):08x}"


def _node_table(state: NodeState, fam: _Family) -> str:
    # nft (1.0.6 at least) cannot OR a map lookup into a masked mark ("Right hand side of binary operation
    # must be constant"). Rather than overwrite the whole mark (clobbering kube-proxy/CNI bits), the map
    # is a verdict map to one tiny chain per slot that sets only our bits: still one O(1) lookup per
    # packet, whatever the number of apps.
    # Chains only for slots in use, so adding a standby gateway touches ip rules/routes but not nft.
    sets = _node_sets(state, fam)
    slots = sorted(set(sets[0].elements.values()))
    p = fam.proto
    body: list[str] = [line for s in sets for line in _set_block(s)]
    for s in slots:
        body += [f"  chain mark_slot_{v.slot(s)} {{", f"    {_slot_rule(s)}", "  }"]
    body += [
        "  chain prerouting {",
        # mangle: before the routing decision that the ip rules act on.
        "    type filter hook prerouting priority mangle; policy accept;",
        f"    {p} daddr != @internal {p} saddr vmap @mark_by_source",
        "  }",
    ]
    return _replace_table(body, fam.table)


# --- element changes: the steady state's nft transaction -------------------------------------------------
# A table that the renderer wrote for a known state (a state the previous reconcile verified) needs only the
# elements that differ: a transaction that adds a few elements costs the kernel a fraction of one that
# replaces a table of thousands (docs/ARCHITECTURE.md, "The reconcile loop"). Anything else (a table that
# appears or goes, another interface) is written whole, as without a known state.

_ABSENT = object()
_ITEM_SEPARATOR = ",\n    "


def _element_changes(table: str, have: list[_Set], want: list[_Set]) -> tuple[list[str], list[str]]:
    """The statements that turn the sets and maps ``have`` into ``want`` (the same declarations): deletes and
    adds. A map key whose value changes is deleted and added again: nft refuses to add a key that is there
    with another value, and has no way to change it in place. No statement for no element (nft rejects
    "{ }").

    Adds are the set declared again with the new elements (``add set T S { type ...; elements = {...}; }``):
    a declaration that matches changes nothing, one on a missing table fails. ``add element`` would do the
    same, but nft 1.0.6 first lists every element of every set for it (65-150 ms at 10,000 entries)."""
    deletes: list[str] = []
    adds: list[str] = []
    for old, new in zip(have, want, strict=True):
        gone = [_key_text(k) for k, x in old.elements.items() if new.elements.get(k, _ABSENT) != x]
        added = [_element(k, x) for k, x in new.elements.items() if old.elements.get(k, _ABSENT) != x]
        if gone:
            deletes.append(f"delete element {table} {new.name} {{ {_ITEM_SEPARATOR.join(gone)} }}")
        if added:
            flags = " flags interval;" if new.interval else ""
            adds.append(
                f"add {new.kind} {table} {new.name} {{ type {new.type_line};{flags}\n"
                f"    elements = {{ {_ITEM_SEPARATOR.join(added)} }}; }}"
            )
    return deletes, adds


def _script(lines: list[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def _gateway_nft_changes(actual: GatewayState, desired: GatewayState) -> str:
    """One nft script (one transaction) that turns the tables render_gateway_nft wrote for ``actual`` into
    those it writes for ``desired`` (the same interface): per table the deletes, then the adds; the IPv6
    table written whole when it appears, deleted when it goes. Empty when no element differs."""
    had6, want6 = gateway_has_ipv6(actual), gateway_has_ipv6(desired)
    tables = [
        (_TABLE, _gateway_sets(actual, _V4), _gateway_sets(desired, _V4)),
        (_ARP_TABLE, _arp_sets(actual), _arp_sets(desired)),
    ]
    if had6 and want6:
        tables.append((_TABLE6, _gateway_sets(actual, _V6), _gateway_sets(desired, _V6)))
    lines: list[str] = []
    for table, have, want in tables:
        deletes, adds = _element_changes(table, have, want)
        lines += deletes + adds
    if want6 and not had6:
        return _script(lines) + _gateway_table(desired, _V6)
    return _script(lines) + (_drop_table6() if had6 and not want6 else "")


def _node_table_changes(actual: NodeState, desired: NodeState, fam: _Family) -> list[str]:
    # A slot chain is added before the elements that jump to it, and goes after the last of them (flushed
    # first: a kernel may refuse to delete a chain that still holds a rule).
    have, want = _node_sets(actual, fam), _node_sets(desired, fam)
    have_slots = set(have[0].elements.values())  # mark_by_source
    want_slots = set(want[0].elements.values())
    deletes, adds = _element_changes(fam.table, have, want)
    new_chains: list[str] = []
    for s in sorted(want_slots - have_slots):
        chain = f"{fam.table} mark_slot_{v.slot(s)}"
        new_chains += [f"add chain {chain}", f"add rule {chain} {_slot_rule(s)}"]
    unused: list[str] = []
    for s in sorted(have_slots - want_slots):
        chain = f"{fam.table} mark_slot_{v.slot(s)}"
        unused += [f"flush chain {chain}", f"delete chain {chain}"]
    return deletes + new_chains + adds + unused


def _node_nft_changes(actual: NodeState, desired: NodeState) -> str:
    """Like _gateway_nft_changes, for the tables render_node_nft writes."""
    had6, want6 = node_has_ipv6(actual), node_has_ipv6(desired)
    lines = _node_table_changes(actual, desired, _V4)
    if had6 and want6:
        lines += _node_table_changes(actual, desired, _V6)
    if want6 and not had6:
        return _script(lines) + _node_table(desired, _V6)
    return _script(lines) + (_drop_table6() if had6 and not want6 else "")


def ip_batch_script(cmds: Iterable[Sequence[str]]) -> str:
    """Lines for ``ip -batch -``; accepts argv lists with or without the leading ``ip``."""
    lines = []
    for cmd in cmds:
        argv = list(cmd[1:] if cmd and cmd[0] == "ip" else cmd)
        for token in argv:
            # ip -batch splits on whitespace; every rendered token is validated, this is the backstop.
            if not _SAFE_TOKEN.fullmatch(token):
                raise v.DataplaneValueError(f"unsafe token in ip command: {token!r}")
        lines.append(" ".join(argv))
    return "".join(line + "\n" for line in lines)


def _pool_route(verb: str, net: IPNetwork) -> list[str]:
    # dev lo: the classic anyIP route, independent of the public link (a link going down would flush a
    # route through it, not one through lo).
    return ["ip", "route", verb, "local", _net(net), "dev", "lo", "table", str(RT_TABLE_LOCAL), "proto", str(RT_PROTO)]


def _proxy(verb: str, address: IPAddress, iface: str) -> list[str]:
    # proto 250 marks the entry as ours: the read-back lists it without any other record.
    tail = ["proto", str(RT_PROTO)] if verb == "add" else []
    return ["ip", "neigh", verb, "proxy", _addr(address), "dev", v.interface_name(iface), *tail]


def ndp_sysctl_argv(public_interface: str) -> tuple[str, ...]:
    """Proxy NDP on for the public interface (the kernel answers solicitations for its proxy entries), and
    answered at once: by default a multicast solicitation for a proxied address waits a random time up to
    0.8 s (``proxy_delay``). Slashes, not dots, so an interface name with a dot stays one key."""
    iface = v.interface_name(public_interface)
    return ("sysctl", "-q", "-w", f"net/ipv6/conf/{iface}/proxy_ndp=1", f"net/ipv6/neigh/{iface}/proxy_delay=0")


def _gateway_ip(
    actual: GatewayState | None, desired: GatewayState, version: int = 4
) -> tuple[list[list[str]], list[list[str]]]:
    """The ``ip`` commands of one family (run with IP_BATCH_ARGV or IP6_BATCH_ARGV): (pre, post), before
    and after the nft transaction.

    IPv4: a new pool route comes after the nft transaction that puts its ARP guard in place, and a pool
    route goes before the transaction that takes the guard away (plan_gateway keeps it until post_nft): no
    moment where the gateway answers ARP for another gateway's address. Old-layout /32s go once the pool
    route that now holds them is there (same batch, earlier line).

    IPv6: the kernel answers neighbour solicitations for exactly its proxy entries, so nothing needs
    guarding: pool routes and proxy entries come before the nft transaction that SNATs to the new addresses
    (reachable before used), and go after the one that stopped using them. Old-layout /128s go after
    the pool route and proxy entry that replace them (post, so the pre batch succeeded)."""
    iface = v.interface_name(desired.public_interface)
    host_len = _V4.host_len if version == 4 else _V6.host_len
    have_routes = actual.return_routes if actual else {}
    want_routes = {k: x for k, x in desired.return_routes.items() if k.version == version}
    old_iface = actual.public_interface if actual else iface
    pre: list[list[str]] = []
    post: list[list[str]] = []
    if version == 6:
        have_pools6 = set(by_family(actual.pools, 6)) if actual else set()
        want_pools6 = set(by_family(desired.pools, 6))
        legacy6 = by_family(actual.legacy_addresses, 6) if actual else []
        have_anyip6 = set(by_family(actual.addresses, 6)).difference(legacy6) if actual else set()
        want6 = set(by_family(desired.addresses, 6))
        pre += [_pool_route("replace", n) for n in sorted(want_pools6 - have_pools6)]
        # An interface change moves every entry (proxy entries are per device).
        keep6 = have_anyip6 if old_iface == iface else set()
        pre += [_proxy("add", a, iface) for a in sorted(want6 - keep6)]
        post += [["ip", "addr", "del", f"{_addr(a)}/{host_len}", "dev", old_iface] for a in legacy6]
        post += [_proxy("del", a, old_iface) for a in sorted(have_anyip6 - (want6 if old_iface == iface else set()))]
        post += [_pool_route("del", n) for n in sorted(have_pools6 - want_pools6)]
    for net, via in want_routes.items():
        if have_routes.get(net) != via:
            pre.append(["ip", "route", "replace", _net(net), "via", _addr(via), "proto", str(RT_PROTO)])
    if version == 4:
        have_pools = set(by_family(actual.pools, 4)) if actual else set()
        want_pools = set(by_family(desired.pools, 4))
        for net in sorted(want_pools - have_pools):
            post.append(_pool_route("replace", net))
        for a in by_family(actual.legacy_addresses, 4) if actual else ():
            post.append(["ip", "addr", "del", f"{_addr(a)}/{host_len}", "dev", old_iface])
        for net in sorted(have_pools - want_pools):
            post.append(_pool_route("del", net))
    for net, via in have_routes.items():
        if net.version == version and net not in want_routes:
            post.append(["ip", "route", "del", _net(net), "via", _addr(via), "proto", str(RT_PROTO)])
    return pre, post


def _with_family(cmds: list[list[str]]) -> list[list[str]]:
    return [["ip", "-6", *cmd[1:]] for cmd in cmds]


def render_gateway_ip(actual: GatewayState | None, desired: GatewayState) -> list[list[str]]:
    pre, post = _gateway_ip(actual, desired)
    pre6, post6 = _gateway_ip(actual, desired, 6)
    return pre + post + _with_family(pre6 + post6)


def _rule(verb: str, s: int) -> list[str]:
    table = str(slot_table(s))
    return [
        "ip", "rule", verb, "fwmark", f"0x{slot_mark(s):x}/0x{MARK_MASK:x}",
        "lookup", table, "priority", table, "protocol", str(RT_PROTO),
    ]  # fmt: skip


def _node_ip(
    actual: NodeState | None, desired: NodeState, version: int = 4
) -> tuple[list[list[str]], list[list[str]]]:
    """The ``ip`` commands of one family: the slot tables' default routes and their rules (the same marks
    and table numbers in both families)."""
    unrouted: IPAddress = UNROUTED if version == 4 else UNROUTED6
    want: Mapping[int, IPAddress] = desired.gateways if version == 4 else desired.gateways6
    have: Mapping[int, IPAddress] = (actual.gateways if version == 4 else actual.gateways6) if actual else {}
    if unrouted in want.values():
        raise v.DataplaneValueError(f"{unrouted} is not a valid gateway transit address")
    pre: list[list[str]] = []
    post: list[list[str]] = []
    for s, via in want.items():
        table = str(slot_table(s))
        if have.get(s) != via:
            # Route before rule: a rule pointing at an empty table would fall through to the main table.
            pre.append([
                "ip", "route", "replace", "default", "via", _addr(via),
                "table", table, "proto", str(RT_PROTO),
            ])  # fmt: skip
        if s not in have:
            pre.append(_rule("add", s))
    for s, via in have.items():
        if s not in want:
            post.append(_rule("del", s))
            if via != unrouted:
                post.append([
                    "ip", "route", "del", "default", "via", _addr(via),
                    "table", str(slot_table(s)), "proto", str(RT_PROTO),
                ])  # fmt: skip
    return pre, post


def render_node_ip(actual: NodeState | None, desired: NodeState) -> list[list[str]]:
    pre, post = _node_ip(actual, desired)
    pre6, post6 = _node_ip(actual, desired, 6)
    return pre + post + _with_family(pre6 + post6)


@dataclass(frozen=True)
class Plan:
    """What to run on one host, in order: ``pre_ip``/``pre_ip6`` (make), ``nft`` (one atomic switch of both
    tables), ``post_ip``/``post_ip6`` (break), ``post_nft`` (the record of what is ours, once the break is done).

    ``pre_ip``/``post_ip`` are ``ip -batch`` lines, ``pre_ip6``/``post_ip6`` ``ip -6 -batch`` lines;
    ``nft``/``post_nft`` are ``nft -f -`` scripts or None; ``sysctl`` (first) the argv that turns proxy NDP
    on (empty: none); ``announce`` the gratuitous-ARP/unsolicited-NA argv (empty: none), which never fails and
    is not one of ``steps()``: the exec script runs it after the read-back, once every step succeeded.
    """

    pre_ip: list[str] = field(default_factory=list)
    nft: str | None = None
    post_ip: list[str] = field(default_factory=list)
    changes: tuple[str, ...] = ()
    post_nft: str | None = None
    pre_ip6: list[str] = field(default_factory=list)
    post_ip6: list[str] = field(default_factory=list)
    announce: tuple[str, ...] = ()
    sysctl: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return (
            not self.sysctl
            and not self.pre_ip
            and not self.pre_ip6
            and self.nft is None
            and not self.post_ip
            and not self.post_ip6
            and self.post_nft is None
        )

    def summary(self) -> str:
        return ", ".join(self.changes) if self.changes else "no changes"

    def steps(self) -> list[tuple[list[str], str | None]]:
        """(argv, stdin) pairs to run in order; stop at the first failure. Not the announcement: it is no
        step that can fail, and runs after the read-back (render_exec_script)."""
        out: list[tuple[list[str], str | None]] = []
        if self.sysctl:
            out.append((list(self.sysctl), None))
        for argv, lines in ((IP_BATCH_ARGV, self.pre_ip), (IP6_BATCH_ARGV, self.pre_ip6)):
            if lines:
                out.append((list(argv), "".join(f"{line}\n" for line in lines)))
        if self.nft is not None:
            out.append((list(NFT_APPLY_ARGV), self.nft))
        for argv, lines in ((IP_BATCH_ARGV, self.post_ip), (IP6_BATCH_ARGV, self.post_ip6)):
            if lines:
                out.append((list(argv), "".join(f"{line}\n" for line in lines)))
        if self.post_nft is not None:
            out.append((list(NFT_APPLY_ARGV), self.post_nft))
        return out


def _lines(cmds: list[list[str]]) -> list[str]:
    return ip_batch_script(cmds).splitlines()


def _count(n: int, noun: str, sign: str) -> list[str]:
    return [f"{sign}{n} {noun}{'' if n == 1 else 'es' if noun.endswith('s') else 's'}"] if n else []


def _map_change(name: str, old: int, new: int, changed: bool) -> list[str]:
    if not changed:
        return []
    return [f"{name} {old}->{new} entries" if old != new else f"{name} {new} entries changed"]


def _nft_view(state: GatewayState | None) -> tuple[object, ...] | None:
    # What render_gateway_nft writes: equal views, no nft transaction needed.
    # (IPv6 pools are not in nft: proxy entries, not a guard, keep a gateway to its own addresses.)
    if state is None:
        return None
    pools4 = frozenset(by_family(state.pools, 4))
    return (state.public_interface, state.addresses, state.snat, state.guarded_sources, pools4)


def _gateway_nft(
    actual: GatewayState | None, desired: GatewayState, *, drop_ipv6: bool, incremental: bool
) -> str | None:
    """The nft script from the tables written for ``actual`` to those for ``desired``: None when they are the
    same; with ``incremental`` (``actual`` is known to be what the renderer wrote) only the elements that
    differ, unless the interface changed or ``actual`` holds the old layout (its ip table records /32s);
    else the tables written whole."""
    if _nft_view(actual) == _nft_view(desired):
        return None
    if (
        incremental
        and actual is not None
        and actual.public_interface == desired.public_interface
        and not actual.legacy_addresses
        and _nft_written(actual)
    ):
        return _gateway_nft_changes(actual, desired) or None
    return render_gateway_nft(desired, drop_ipv6=drop_ipv6)


def _nft_written(state: GatewayState) -> bool:
    # A state with nothing in nft may never have had its tables written (a first reconcile that wanted
    # nothing there writes nothing): element changes would fail on the missing tables, a rewrite is tiny.
    return bool(state.addresses or state.snat or state.guarded_sources or by_family(state.pools, 4))


def announce_argv(public_interface: str, addresses: Iterable[IPAddress]) -> tuple[str, ...]:
    """The announcement step for ``addresses``: a gratuitous ARP for the IPv4 ones, an unsolicited neighbour
    advertisement for the IPv6 ones (at most ANNOUNCE_MAX of each family, lowest first)."""
    addresses = list(addresses)
    chosen = [
        _addr(a) for version in (4, 6) for a in sorted(by_family(addresses, version), key=int)[:ANNOUNCE_MAX]
    ]
    if not chosen:
        return ()
    return ("sh", "-c", ANNOUNCE_SCRIPT, "announce", NA_SENDER, v.interface_name(public_interface), *chosen)


def plan_gateway(actual: GatewayState | None, desired: GatewayState, *, incremental: bool = False) -> Plan:
    """What turns the gateway from ``actual`` into ``desired``. ``incremental``: ``actual`` is a state the
    host was verified to hold, so its tables are exactly what the renderer wrote for it and the nft steps
    may change elements only (see _gateway_nft). Never for a state parsed from the host: a table with a
    broken rule parses as empty, and only a rewrite repairs it."""
    if desired.legacy_addresses:
        raise v.DataplaneValueError("a desired gateway state holds no address as a /32 or /128 (old layout)")
    outside6 = uncovered(desired.addresses, desired.pools, 6)
    if outside6:
        raise v.DataplaneValueError(f"address {min(outside6)} lies in none of this gateway's pools")
    pre, post = _gateway_ip(actual, desired)
    pre6, post6 = _gateway_ip(actual, desired, 6)
    have_addrs = actual.addresses if actual else frozenset()
    have_pools = actual.pools if actual else frozenset()
    # Until post_ip/post_ip6 remove them, the /32s and /128s (old layout) stay recorded as ours (else a
    # failed post step would orphan them), and the IPv4 pools whose route goes stay guarded. (IPv6 proxy
    # entries are their own record: proto 250.)
    stale = (actual.legacy_addresses - desired.addresses) if actual else frozenset()
    stale_pools = frozenset(by_family(have_pools - desired.pools, 4))
    want_nft = desired  # render_gateway_nft and _nft_view ignore the return routes
    if stale or stale_pools:
        want_nft = replace(
            desired,
            return_routes={},
            addresses=desired.addresses | stale,
            pools=desired.pools | stale_pools,
            legacy_addresses=stale,
        )
    had_ipv6 = actual is not None and gateway_has_ipv6(actual)
    nft = _gateway_nft(actual, want_nft, drop_ipv6=had_ipv6, incremental=incremental)
    have_routes = actual.return_routes if actual else {}
    have_snat = actual.snat if actual else {}
    migrated = actual.legacy_addresses & desired.addresses if actual else frozenset()
    changes = [
        *_count(len(desired.addresses - have_addrs), "address", "+"),
        *_count(len(have_addrs - desired.addresses), "address", "-"),
        *_count(len(desired.pools - have_pools), "pool route", "+"),
        *_count(len(have_pools - desired.pools), "pool route", "-"),
        *(
            f"{n} /{32 if version == 4 else 128} address{'' if n == 1 else 'es'} moved to pool routes"
            for version in (4, 6)
            if (n := len(by_family(migrated, version)))
        ),
        *_map_change("snat", len(have_snat), len(desired.snat), have_snat != desired.snat),
        *_count(sum(1 for k in desired.return_routes if k not in have_routes), "route", "+"),
        *_count(
            sum(1 for k, x in desired.return_routes.items() if k in have_routes and have_routes[k] != x),
            "route", "~",
        ),
        *_count(sum(1 for k in have_routes if k not in desired.return_routes), "route", "-"),
    ]
    if actual is None or actual.guarded_sources != desired.guarded_sources:
        changes.append(f"guarded sources {len(desired.guarded_sources)}")
    if nft is not None and not changes:
        changes.append("nft table rewritten")
    # Once post_ip removed them, the record is rewritten without the stale addresses and pools.
    post_nft = (
        _gateway_nft(want_nft, desired, drop_ipv6=had_ipv6 or gateway_has_ipv6(want_nft), incremental=incremental)
        if stale or stale_pools
        else None
    )
    new_pools6 = by_family(desired.pools - have_pools, 6)
    return Plan(
        pre_ip=_lines(pre),
        nft=nft,
        post_ip=_lines(post),
        changes=tuple(changes),
        post_nft=post_nft,
        pre_ip6=_lines(pre6),
        post_ip6=_lines(post6),
        announce=announce_argv(desired.public_interface, desired.addresses - have_addrs),
        # With a new IPv6 pool route (a first IPv6 address, a restore, a sysctl reset by hand: the read-back
        # reports IPv6 pools only while proxy NDP is on).
        sysctl=ndp_sysctl_argv(desired.public_interface) if new_pools6 else (),
    )


def plan_node(actual: NodeState | None, desired: NodeState, *, incremental: bool = False) -> Plan:
    """Like plan_gateway; with ``incremental`` the nft step changes elements, and adds or deletes the slot
    chains they jump to, instead of rewriting the tables."""
    pre, post = _node_ip(actual, desired)
    pre6, post6 = _node_ip(actual, desired, 6)
    nft_view = (actual.steering, actual.internal) if actual else None
    want = (desired.steering, desired.internal)
    had_ipv6 = actual is not None and node_has_ipv6(actual)
    if nft_view == want:
        nft = None
    elif incremental and actual is not None and (actual.steering or actual.internal):
        # (Nothing in nft: its tables may never have been written; see _nft_written.)
        nft = _node_nft_changes(actual, desired) or None
    else:
        nft = render_node_nft(desired, drop_ipv6=had_ipv6)
    changes: list[str] = []
    for noun, have_gw, want_gw in (
        ("gateway", actual.gateways if actual else {}, desired.gateways),
        ("IPv6 gateway", actual.gateways6 if actual else {}, desired.gateways6),
    ):
        changes += [
            *_count(sum(1 for s in want_gw if s not in have_gw), noun, "+"),
            *_count(sum(1 for s, x in want_gw.items() if s in have_gw and have_gw[s] != x), noun, "~"),
            *_count(sum(1 for s in have_gw if s not in want_gw), noun, "-"),
        ]
    have_steer = actual.steering if actual else {}
    changes += _map_change("steering", len(have_steer), len(desired.steering), have_steer != desired.steering)
    if actual is None or actual.internal != desired.internal:
        changes.append(f"internal {len(desired.internal)}")
    if nft is not None and not changes:
        changes.append("nft table rewritten")
    return Plan(
        pre_ip=_lines(pre),
        nft=nft,
        post_ip=_lines(post),
        changes=tuple(changes),
        pre_ip6=_lines(pre6),
        post_ip6=_lines(post6),
    )


def plan_gateway_decommission(actual: GatewayState, *, table_exists: bool, table6_exists: bool = False) -> Plan:
    """Everything of ours off a drained gateway that holds no address: its pool routes, egress addresses
    and return routes (``ip``, both families), then the product's tables (the ARP guard after the pool
    routes it guards). Empty when nothing of ours is left."""
    empty = GatewayState.build(public_interface=actual.public_interface)
    _, remove = _gateway_ip(actual, empty)
    _, remove6 = _gateway_ip(actual, empty, 6)
    lines, lines6 = _lines(remove), _lines(remove6)
    drop6 = table6_exists or gateway_has_ipv6(actual)
    if not table_exists and not drop6 and not lines and not lines6:
        return Plan()
    # The ARP table is deleted whether or not it exists ("add, then delete" works either way).
    arp = f"table {_ARP_TABLE} {{}}\ndelete table {_ARP_TABLE}\n"
    nft = (f"delete table {_TABLE}\n" if table_exists else "") + arp + (_drop_table6() if drop6 else "")
    return Plan(
        pre_ip=lines,
        pre_ip6=lines6,
        nft=nft,
        changes=("drained: product tables, pool routes, addresses and routes removed",),
    )


# One remote exec for a whole reconcile: the script arrives on stdin, so its size is not bound by the
# kernel's limit on one argument, and nothing of it is ever a command-line string built from input.
EXEC_ARGV = ["sh", "-s"]
# Ends each command's output, followed by "<name> <exit status>": a byte no nft/ip output contains.
EXEC_SECTION = "\x1e"
_SECTION_NAME = re.compile(r"[a-z]+:[a-z0-9]+")


@dataclass(frozen=True)
class HostRead:
    """One command that reads a host's state: ``argv``, fed ``stdin`` (an ``ip -batch`` script; None: no
    input). ``parts``: for a batch, the name of each line of its output (one JSON document per command);
    empty: the whole output is one input of the parser. The exec script and the sudo path (one command at
    a time, no shell) run the same commands."""

    argv: tuple[str, ...]
    stdin: str | None = None
    parts: tuple[str, ...] = ()


def render_exec_script(
    apply: Sequence[tuple[Sequence[str], str | None]],
    reads: Mapping[str, HostRead],
    *,
    announce: Sequence[str] = (),
) -> str:
    """A shell script that runs the ``apply`` steps in order (argv, stdin), stopping at the first that fails,
    then every read whatever happened: apply and read back in one round trip. Each command's output (stderr
    merged) is followed by a section line ``<EXEC_SECTION>apply:<i> <status>`` or
    ``<EXEC_SECTION>read:<name> <status>`` (parsed by ``parse.parse_exec_output``). Last, when every step
    succeeded, ``announce`` (Plan.announce) starts in the background with no output: best effort, it neither
    delays the read-back nor fails the exec.

    argv tokens are shell-quoted; a command's stdin is a quoted here-document (no expansion) whose delimiter
    is random and checked not to occur in it."""
    delimiter = f"EGRESS_EOF_{secrets.token_hex(8)}"

    def with_stdin(command: str, stdin: str | None) -> list[str]:
        if stdin is None:
            return [f"{command} </dev/null 2>&1"]
        body = stdin if stdin.endswith("\n") else stdin + "\n"
        if delimiter in body.splitlines():
            raise v.DataplaneValueError("a command's input holds the here-document delimiter")
        return [f"{command} 2>&1 <<'{delimiter}'", body.rstrip("\n"), delimiter]

    lines = ["ok=0"]
    for index, (argv, stdin) in enumerate(apply):
        lines.append('if [ "$ok" -eq 0 ]; then')
        lines += with_stdin(_shell_join(argv), stdin)
        lines.append(f"s=$?; printf '\\n\\036apply:{index} %s\\n' \"$s\"; [ \"$s\" -eq 0 ] || ok=1")
        lines.append("fi")
    for name, read in reads.items():
        section = f"read:{name}"
        if not _SECTION_NAME.fullmatch(section):
            raise v.DataplaneValueError(f"bad read name {name!r}")
        lines += with_stdin(_shell_join(read.argv), read.stdin)
        lines.append(f"printf '\\n\\036{section} %s\\n' \"$?\"")
    if announce:
        lines += ['if [ "$ok" -eq 0 ]; then', f"{_shell_join(announce)} </dev/null >/dev/null 2>&1 &", "fi"]
    return "\n".join(lines) + "\n"


def _shell_join(argv: Sequence[str]) -> str:
    if not argv or any(not isinstance(a, str) or "\x00" in a or "\n" in a for a in argv):
        raise v.DataplaneValueError("a command must be a non-empty argv of single-line strings")
    return " ".join(shlex_quote(a) for a in argv)
