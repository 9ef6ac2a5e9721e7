"""Desired/actual dataplane state of a gateway or a node, and the product's conventions on a host.

Instances validate and normalise themselves, so every ``GatewayState``/``NodeState`` that exists is safe to
render. Equality of two states means "no change needed".
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import ItemsView, Iterable, Iterator, Mapping, ValuesView
from dataclasses import MISSING, dataclass, fields
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeVar

from . import validate as v

__all__ = [
    "FrozenMap",
    "GatewayState",
    "MARK_MASK",
    "NFT_ARP_FAMILY",
    "NFT_FAMILY",
    "NFT_FAMILY6",
    "NFT_TABLE",
    "NodeState",
    "RT_PROTO",
    "RT_TABLE_LOCAL",
    "TABLE_BASE",
    "UNROUTED",
    "UNROUTED6",
    "IPAddress",
    "IPNetwork",
    "covered",
    "uncovered",
    "slot_mark",
    "slot_table",
    "state_from_doc",
    "state_to_doc",
]

NFT_FAMILY = "ip"
NFT_FAMILY6 = "ip6"  # IPv6 entries live in table "ip6 egressportal", written only when there are any
NFT_TABLE = "egressportal"  # the ONLY nft table name the product writes, on gateways and nodes alike
NFT_ARP_FAMILY = "arp"  # gateways also have "arp egressportal": the ARP guard of their anyIP pools
TABLE_BASE = 7100  # slot N -> routing table and ip rule priority TABLE_BASE + N
MARK_SHIFT = 16
# Slot bits only: kube-proxy uses 0x4000/0x8000; staying inside 0x00ff0000 leaves other users' bits alone.
MARK_MASK = 0x00FF0000
RT_PROTO = 250  # tags our routes and rules so they can be listed and removed without touching others
RT_TABLE_LOCAL = 255  # the kernel's "local" table: where a gateway's anyIP pool routes live
# In an *actual* NodeState: the slot's ip rule exists but its routing table has no default route. Never
# valid in a desired state (plan_node refuses it).
UNROUTED = IPv4Address(0)  # 0.0.0.0
UNROUTED6 = IPv6Address(0)  # "::": the same for a slot's IPv6 rule (NodeState.gateways6)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

K = TypeVar("K")
V = TypeVar("V")


def slot_table(slot: int) -> int:
    return TABLE_BASE + v.slot(slot)


def slot_mark(slot: int) -> int:
    return v.slot(slot) << MARK_SHIFT


class _SortedItems(ItemsView):  # type: ignore[type-arg]
    # The pairs in their stored order, without a lookup per key (hashing 10,000 ipaddress keys in Python).
    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return iter(self._mapping._items)  # type: ignore[attr-defined]


class _SortedValues(ValuesView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return (x for _, x in self._mapping._items)  # type: ignore[attr-defined]


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping with sorted iteration (deterministic rendering)."""

    __slots__ = ("_items", "_lookup")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        keys = [family_key(k) for k, _ in pairs]
        order = sorted(range(len(pairs)), key=keys.__getitem__)
        # Two keys are equal exactly when their family keys are (the key types a state holds: ipaddress
        # values, ints, texts), and equal keys sort next to each other: duplicates are found without
        # hashing every key.
        if any(keys[a] == keys[b] for a, b in zip(order, order[1:], strict=False)):
            raise v.DataplaneValueError("duplicate keys")
        self._items: tuple[tuple[K, V], ...] = tuple(pairs[i] for i in order)
        self._lookup: dict[K, V] | None = None  # built on the first lookup (iteration follows _items)

    @property
    def _dict(self) -> dict[K, V]:
        if self._lookup is None:
            self._lookup = dict(self._items)
        return self._lookup

    def __getitem__(self, key: K) -> V:
        return self._dict[key]

    def __iter__(self) -> Iterator[K]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> ItemsView[K, V]:
        return _SortedItems(self)

    def values(self) -> ValuesView[V]:
        return _SortedValues(self)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._dict == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._dict!r})"


_NETWORK_TYPES = (IPv4Network, IPv6Network)
_ADDRESS_TYPES = (IPv4Address, IPv6Address)


def family_key(value: Any) -> tuple[Any, ...]:
    """Sort key that orders IPv4 before IPv6 (ipaddress refuses to compare across families), then as
    ipaddress orders them (a network by its address, then its prefix length), as integers: sorting
    10,000 entries compares ints in C, not ipaddress objects in Python."""
    cls = type(value)
    if cls is IPv4Network:  # the common case, by ipaddress's own fields (its int()/prefixlen are Python calls)
        return (4, value.network_address._ip, value._prefixlen)
    if cls is IPv4Address:
        return (4, value._ip)
    if isinstance(value, _NETWORK_TYPES):
        return (value.version, int(value.network_address), value.prefixlen)
    if isinstance(value, _ADDRESS_TYPES):
        return (value.version, int(value))
    return (0, value)


def by_family(values: Iterable[Any], version: int) -> list[Any]:
    """The values of one family (4 or 6), sorted."""
    return sorted((x for x in values if x.version == version), key=family_key)


# Typed values are taken as they are where the validators would return them unchanged: an IPv4Address or
# IPv4Network object is valid by construction (v.ipv4_address/v.ipv4_network return it as is). Text (from
# the database, a user, a host) and IPv6 objects (which must also lie outside the reserved ranges) are
# always validated; see docs/ARCHITECTURE.md, "Validation once, at the boundary".
# v.ip_address/v.ip_network take those first, by exact type.
_address = v.ip_address
_network = v.ip_network


def _span(net: IPNetwork) -> tuple[int, int]:
    if type(net) is IPv4Network:  # ipaddress's own fields: its int()/prefixlen are Python calls
        start = net.network_address._ip
        return start, start + (1 << (32 - net._prefixlen)) - 1
    start = int(net.network_address)
    return start, start + (1 << (net.max_prefixlen - net.prefixlen)) - 1


def _collapse(nets: list[IPNetwork]) -> list[IPNetwork]:
    """``ipaddress.collapse_addresses`` of one family's networks (the fewest CIDRs covering their union),
    on integers: the same result, without ipaddress's per-object arithmetic for 10,000 entries."""
    if len(nets) < 2:
        return list(nets)
    cls = type(nets[0])
    bits = nets[0].max_prefixlen
    given = {_span(n): n for n in nets}
    out: list[IPNetwork] = []
    merged: list[list[int]] = []
    for lo, hi in sorted(given):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    for lo, hi in merged:
        while lo <= hi:
            size = min((lo & -lo).bit_length() - 1 if lo else bits, (hi - lo + 1).bit_length() - 1)
            end = lo + (1 << size) - 1
            out.append(given.get((lo, end)) or cls((lo, bits - size)))
            lo = end + 1
    return out


def _pairs(value: Any) -> Iterable[tuple[Any, Any]]:
    return value.items() if isinstance(value, Mapping) else value


def _typed_set(values: Any, cls: type) -> bool:
    """Whether ``values`` is a set or frozenset of ``cls`` objects only (valid by construction: a frozenset
    of them is made from the set's stored hashes, without hashing every element again in Python)."""
    return type(values) in (frozenset, set) and (not values or set(map(type, values)) == {cls})


def _addresses(values: Iterable[Any]) -> frozenset[IPAddress]:
    if _typed_set(values, IPv4Address):
        return frozenset(values)  # the same object when it is one already
    return frozenset(map(_address, values))


def _networks(values: Iterable[Any]) -> frozenset[IPNetwork]:
    # Interval sets reject overlapping elements; collapsing also makes "198.18.20.0/25 + 198.18.20.128/25" and
    # "198.18.20.0/24" the same state, which is what the kernel sees. Collapsed per family.
    nets = list(map(_network, values))  # IPv4Network or IPv6Network objects only
    return frozenset(
        [*_collapse([n for n in nets if type(n) is IPv4Network]),
         *_collapse([n for n in nets if type(n) is not IPv4Network])]
    )


def _disjoint_keys(nets: Iterable[IPNetwork], what: str) -> None:
    # Sorted by (family, start, prefix length): a network overlaps another only if it overlaps the next one
    # of its family (one containing a later one contains everything between them).
    ordered = sorted(((family_key(n), _span(n), n) for n in nets), key=lambda t: t[0])
    for (ka, (_, a_end), a), (kb, (b_start, _), b) in zip(ordered, ordered[1:], strict=False):
        if ka[0] == kb[0] and b_start <= a_end:
            raise v.DataplaneValueError(f"overlapping {what}: {a} and {b}")


def _same_family(net: IPNetwork, address: IPAddress, what: str) -> None:
    if net.version != address.version:
        raise v.DataplaneValueError(f"{what} {net} -> {address}: mixes IPv{net.version} and IPv{address.version}")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def covered(address: IPAddress, prefixes: Iterable[IPNetwork]) -> bool:
    return any(address.version == p.version and address in p for p in prefixes)


def uncovered(addresses: Iterable[IPAddress], prefixes: Iterable[IPNetwork], version: int = 4) -> list[IPAddress]:
    """The addresses of one family (4 or 6) that lie in none of ``prefixes`` (disjoint per family, as
    collapsed): a bisection over the prefixes' integer bounds, so 10,000 addresses against dozens of
    prefixes stay cheap."""
    bounds = sorted(_span(p) for p in prefixes if p.version == version)
    starts = [lo for lo, _ in bounds]
    out = []
    for a in addresses:
        if type(a) is IPv4Address:  # ipaddress's own field (version and int() are Python calls)
            if version != 4:
                continue
            n = a._ip
        elif a.version != version:
            continue
        else:
            n = int(a)
        i = bisect_right(starts, n) - 1
        if i < 0 or n > bounds[i][1]:
            out.append(a)
    return out


@dataclass(frozen=True)
class GatewayState:
    """A gateway's share of the product (docs/ARCHITECTURE.md, "The gateway's address plan").

    The gateway holds ``pools`` (both families) as anyIP: one ``local`` route per prefix (table local,
    dev lo), so the kernel accepts any address of them without one interface address each. IPv4: an ARP
    guard (nft table ``arp egressportal``) drops ARP requests for pool addresses that are not in
    ``addresses``, so on a shared segment each gateway answers only for its own. IPv6: one proxy NDP entry
    per address in ``addresses`` (the kernel answers neighbour solicitations for nothing else).
    ``legacy_addresses``: addresses still held the old way, as a /32 or /128 on ``public_interface`` (only
    ever reported by a host; a desired state has none).

    A parsed state may hold an IPv6 address its pool routes do not cover (a pool route deleted by hand:
    the proxy entry still answers and SNAT still works); a desired state built by ``build`` never does.
    """

    public_interface: str
    # Both families: egress IPs this gateway holds (answers ARP for and SNATs to; IPv6: as the IPv6
    # renderer holds them, IPv4: within ``pools``)
    addresses: frozenset[IPAddress]
    snat: Mapping[IPNetwork, IPAddress]  # app source CIDR -> egress IP of the same family
    return_routes: Mapping[IPNetwork, IPAddress]  # pod CIDR -> node transit address of the same family
    # All pod CIDRs of the region: forwarded traffic from these out of public_interface WITHOUT a snat
    # mapping is dropped, so a pod source address never leaks.
    guarded_sources: frozenset[IPNetwork]
    pools: frozenset[IPNetwork] = frozenset()  # prefixes held as anyIP (a local route each), both families
    legacy_addresses: frozenset[IPAddress] = frozenset()  # old layout: a /32 or /128 on public_interface

    def __post_init__(self) -> None:
        _set(self, "public_interface", v.interface_name(self.public_interface))
        addresses = _addresses(self.addresses)
        pools = _networks(self.pools)
        legacy = _addresses(self.legacy_addresses)
        if not legacy <= addresses:
            raise v.DataplaneValueError("a legacy /32 address must be one of the gateway's addresses")
        outside = uncovered(addresses - legacy if legacy else addresses, pools)
        if outside:
            raise v.DataplaneValueError(f"address {min(outside)} lies in none of this gateway's pools")
        snat = FrozenMap([(_network(k), _address(x)) for k, x in _pairs(self.snat)])
        _disjoint_keys(snat, "SNAT source CIDRs")
        # IPv4 targets are looked up by integer (an IPv4Address equals exactly the IPv4Address of the same
        # integer; ipaddress hashes in Python).
        held4 = {a._ip for a in addresses if type(a) is IPv4Address}
        for source, target in snat.items():
            if type(source) is IPv4Network and type(target) is IPv4Address:
                if target._ip in held4:
                    continue
            else:
                _same_family(source, target, "SNAT")
            if target not in addresses:
                raise v.DataplaneValueError(
                    f"SNAT {source} -> {target}: {target} is not one of this gateway's addresses"
                )
        routes = FrozenMap([(_network(k), _address(x)) for k, x in _pairs(self.return_routes)])
        for net, via in routes.items():
            _same_family(net, via, "return route")
        _set(self, "addresses", addresses)
        _set(self, "snat", snat)
        _set(self, "return_routes", routes)
        _set(self, "guarded_sources", _networks(self.guarded_sources))
        _set(self, "pools", pools)
        _set(self, "legacy_addresses", legacy)

    @classmethod
    def build(
        cls,
        *,
        public_interface: str,
        addresses: Iterable[str | IPAddress] = (),
        snat: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),
        return_routes: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),
        guarded_sources: Iterable[str | IPNetwork] = (),
        pools: Iterable[str | IPNetwork] | None = None,
        legacy_addresses: Iterable[str | IPAddress] = (),
    ) -> GatewayState:
        """Validate and normalise (strict networks, sorted immutable maps) from plain values.

        ``pools=None``: each address is its own pool (a /32 or /128 local route), for callers that know no
        pool."""
        addresses = _addresses(addresses)
        if pools is None:
            pools = {v.ip_network(a) for a in addresses}
        return cls(
            public_interface=public_interface,
            addresses=addresses,  # type: ignore[arg-type]
            snat=snat,  # type: ignore[arg-type]
            return_routes=return_routes,  # type: ignore[arg-type]
            guarded_sources=frozenset(guarded_sources),  # type: ignore[arg-type]
            pools=frozenset(pools),  # type: ignore[arg-type]
            legacy_addresses=frozenset(legacy_addresses),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class NodeState:
    steering: Mapping[IPNetwork, int]  # app source CIDR (either family) -> gateway slot (1..250)
    gateways: Mapping[int, IPv4Address]  # gateway slot -> gateway IPv4 transit address
    internal: frozenset[IPNetwork]  # destinations never steered (pod CIDRs, transit net, mgmt net)
    # gateway slot -> gateway IPv6 transit address; IPv6 steering needs its slot here (same mark, same
    # table number as IPv4, in the IPv6 routing tables)
    gateways6: Mapping[int, IPv6Address] = FrozenMap()

    def __post_init__(self) -> None:
        steering = FrozenMap((_network(k), v.slot(s)) for k, s in _pairs(self.steering))
        _disjoint_keys(steering, "steered source CIDRs")
        gateways = FrozenMap((v.slot(s), v.ipv4_address(a)) for s, a in _pairs(self.gateways))
        gateways6 = FrozenMap((v.slot(s), _ipv6_or_unrouted(a)) for s, a in _pairs(self.gateways6))
        for source, s in steering.items():
            # A mark whose table has no rule falls through to the main table: the app would silently
            # leave from the node's own IP.
            if s not in (gateways if source.version == 4 else gateways6):
                family = "" if source.version == 4 else "IPv6 "
                raise v.DataplaneValueError(f"steering {source} -> slot {s}: slot has no {family}gateway")
        _set(self, "steering", steering)
        _set(self, "gateways", gateways)
        _set(self, "gateways6", gateways6)
        _set(self, "internal", _networks(self.internal))

    @classmethod
    def build(
        cls,
        *,
        steering: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),
        gateways: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),
        internal: Iterable[str | IPNetwork] = (),
        gateways6: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = (),
    ) -> NodeState:
        return cls(
            steering=steering,  # type: ignore[arg-type]
            gateways=gateways,  # type: ignore[arg-type]
            internal=frozenset(internal),  # type: ignore[arg-type]
            gateways6=gateways6,  # type: ignore[arg-type]
        )


def _ipv6_or_unrouted(value: object) -> IPv6Address:
    # "::" only ever comes from parsing a host (a rule without its route); plan_node refuses it.
    if value == UNROUTED6 or value == str(UNROUTED6):
        return UNROUTED6
    return v.ipv6_address(value)


_STATE_KINDS: dict[str, type[GatewayState] | type[NodeState]] = {"gateway": GatewayState, "node": NodeState}


# Texts of IPv4 values by their integers (str() of an ipaddress value is several Python calls; a changed
# state of 10,000 addresses is encoded on every toggle, mostly the same values as the time before).
_TEXTS_MAX = 1 << 17
_address_texts: dict[int, str] = {}
_network_texts: dict[tuple[int, int], str] = {}


def _cached_text(cache: dict[Any, str], key: Any, value: object) -> str:
    text = cache.get(key)
    if text is None:
        if len(cache) >= _TEXTS_MAX:
            cache.clear()
        text = cache[key] = str(value)
    return text


def _plain(value: object) -> object:
    cls = type(value)
    if cls is IPv4Address:
        return _cached_text(_address_texts, value._ip, value)  # type: ignore[attr-defined]
    if cls is IPv4Network:
        key = (value.network_address._ip, value._prefixlen)  # type: ignore[attr-defined]
        return _cached_text(_network_texts, key, value)
    return value if isinstance(value, (int, str)) else str(value)


def state_to_doc(state: GatewayState | NodeState) -> dict[str, Any]:
    """The state as plain JSON values (kept between reconciles: see ``state_from_doc``)."""
    doc: dict[str, Any] = {"kind": "gateway" if isinstance(state, GatewayState) else "node"}
    for f in fields(state):
        value = getattr(state, f.name)
        if isinstance(value, str):
            doc[f.name] = value
        elif isinstance(value, Mapping):
            doc[f.name] = [[_plain(k), _plain(x)] for k, x in value.items()]
        elif isinstance(value, frozenset):
            doc[f.name] = sorted([str(_plain(x)) for x in value])
        else:
            raise TypeError(f"cannot store {f.name} of type {type(value).__name__}")
    return doc


def _has_default(f: Any) -> bool:
    return f.default is not MISSING


def state_from_doc(doc: object) -> GatewayState | NodeState:
    """A state from ``state_to_doc``'s output, validated like any other (DataplaneValueError otherwise)."""
    if not isinstance(doc, dict) or doc.get("kind") not in _STATE_KINDS:
        raise v.DataplaneValueError("not a stored dataplane state")
    cls = _STATE_KINDS[doc["kind"]]
    try:
        # A field added since the doc was stored (gateways6) takes its default.
        return cls(**{f.name: doc[f.name] for f in fields(cls) if f.name in doc or not _has_default(f)})
    except (KeyError, TypeError, ValueError) as exc:
        raise v.DataplaneValueError(f"not a stored dataplane state: {exc}") from None
