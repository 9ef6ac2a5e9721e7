"""Pure IPv6 arithmetic (egressportal/core/ipam6.py): as strict as IPv4, no database."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Address, IPv6Network

import pytest

from egressportal.core import ipam6
from egressportal.core.ipam import IPAMError


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Enter an"),
        ("2001:db8::1/64", "host bits set; did you mean 2001:db8::/64"),
        ("2001:db8::", "no prefix length"),
        ("2001:db8::/129", "not a valid"),
        ("2001:db8::%eth0/64", "zone index"),
        ("2001:db8::/64; reboot", "not a valid"),
        ("2001:db8::/64\n2001:db8:1::/64", "not a valid"),
        ("2001:db8:0:0:0:0:0:0:0/64", "not a valid"),
        ("2001:db8::/+64", "not a valid"),
        ("２００１:db8::/64", "not a valid"),  # full-width digits
        ("::ffff:203.0.113.0/120", "IPv4-mapped"),
        ("::ffff:0:0/96", "IPv4-mapped"),
        ("::/0", "includes ::ffff:0:0/96"),  # the whole space holds the refused ranges
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::203.0.113.0/120", "reserved"),
        ("fe80::/64", "link-local"),
        ("fec0::/64", "site-local"),
        ("ff02::/16", "multicast"),
        (["2001:db8::/64"], "Enter an"),
    ],
)
def test_parse_network6_refuses_with_a_reason(text, fragment):
    with pytest.raises(IPAMError, match=fragment):
        ipam6.parse_network6(text)


def test_parse_network6_normalises_and_limits_width():
    assert ipam6.parse_network6(" 2001:DB8:0:2::/64 ") == IPv6Network("2001:db8:0:2::/64")
    with pytest.raises(IPAMError, match="at most a /64"):
        ipam6.parse_network6("2001:db8::/48", max_width=64)
    assert ipam6.parse_network6("2001:db8::/64", max_width=64).prefixlen == 64


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2001:db8::1%eth0", "zone index"),
        ("fe80::1", "link-local"),
        ("::ffff:198.18.0.1", "IPv4-mapped"),
        ("ff02::1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("2001:db8::/64", "no prefix length here"),
        ("2001:db8::g", "not a valid"),
        ("203.0.113.1", "not a valid"),
    ],
)
def test_parse_address6_refuses(text, fragment):
    with pytest.raises(IPAMError, match=fragment):
        ipam6.parse_address6(text)


def test_parse_any_dispatches_on_the_family():
    assert ipam6.parse_network_any("203.0.113.0/28") == IPv4Network("203.0.113.0/28")
    assert ipam6.parse_network_any("2001:db8::/64") == IPv6Network("2001:db8::/64")
    with pytest.raises(IPAMError, match="at most a /48"):
        ipam6.parse_network_any("2001:db8::/32", max_width6=48)
    assert str(ipam6.parse_address_any("2001:DB8::A")) == "2001:db8::a"
    with pytest.raises(IPAMError, match="IPv4-mapped"):
        ipam6.parse_address_any("::ffff:203.0.113.1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2001:db8:10:1::17", "2001:db8:10:1::17/128"), ("2001:db8:10:1::100/120", "2001:db8:10:1::100/120")],
)
def test_placements_are_an_address_or_at_most_a_slash120(text, expected):
    assert str(ipam6.parse_placement_any(text)) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("2001:db8:10:1::/119", "too wide"), ("2001:db8:10:1::/64", "too wide"), ("fe80::1", "link-local")],
)
def test_placement_refusals(text, fragment):
    with pytest.raises(IPAMError, match=fragment):
        ipam6.parse_placement_any(text)


def test_hex_keys_sort_like_the_numbers():
    values = [IPv6Address("2001:db8::1"), IPv6Address("2001:db8::a"), IPv6Address("2001:db8::10"), IPv6Address("ffff::")]
    keys = [ipam6.hex_key(v) for v in values]
    assert keys == sorted(keys) and all(len(k) == 32 for k in keys)
    assert [ipam6.from_hex_key(k) for k in keys] == values
    assert ipam6.network_keys(IPv6Network("2001:db8::/120")) == (
        "20010db8000000000000000000000000",
        "20010db80000000000000000000000ff",
    )


def test_usable_range_skips_the_subnet_router_anycast_address():
    net = IPv6Network("2001:db8::/126")
    first, last = ipam6.usable_range6(net)
    assert (IPv6Address(first), IPv6Address(last)) == (IPv6Address("2001:db8::1"), IPv6Address("2001:db8::3"))
    assert ipam6.usable_count6(IPv6Network("2001:db8::/127")) == 2
    assert ipam6.usable_count6(IPv6Network("2001:db8::/64")) == 2**64 - 1
    assert ipam6.usable_count6(net, [IPv6Address("2001:db8::2"), IPv6Address("2001:db8::")]) == 2


def test_next_free_takes_the_one_after_the_top_then_fills_gaps_of_small_pools():
    net = IPv6Network("2001:db8::/126")
    assert ipam6.next_free6(net, top=None) == IPv6Address("2001:db8::1")
    assert ipam6.next_free6(net, top=int(IPv6Address("2001:db8::1")), excluded=[IPv6Address("2001:db8::2")]) == (
        IPv6Address("2001:db8::3")
    )
    top = int(IPv6Address("2001:db8::3"))
    assert ipam6.next_free6(net, top=top) is None
    assert ipam6.next_free6(net, top=top, used=[top, top - 2]) == IPv6Address("2001:db8::2")
    assert ipam6.next_free6(net, top=top, used=[top, top - 1, top - 2]) is None


def test_next_free_never_scans_a_huge_pool():
    net = IPv6Network("2001:db8::/64")
    top = int(net.broadcast_address)
    assert ipam6.next_free6(net, top=top, used=[top]) is None  # returns at once instead of walking 2**64


def test_usable_prefixes6_cover_exactly_what_a_pool_hands_out():
    from ipaddress import IPv6Address, IPv6Network

    from egressportal.core.ipam6 import usable_prefixes6

    net = IPv6Network("2001:db8:0:2::/64")
    prefixes = usable_prefixes6(net, [IPv6Address("2001:db8:0:2::1")])  # the segment's router
    assert len(prefixes) < 130  # a few dozen routes, not one per address
    covered = [p for p in prefixes if IPv6Address("2001:db8:0:2::1") in p or net.network_address in p]
    assert covered == []  # never the subnet-router anycast address, never the router
    assert sum(p.num_addresses for p in prefixes) == 2**64 - 2
    assert usable_prefixes6(IPv6Network("2001:db8::/127")) == [IPv6Network("2001:db8::/127")]


def test_next_free6_many_gives_what_one_at_a_time_would():
    """The bulk enable and the backfill take many addresses at once; they must be the very addresses
    that taking one at a time (each enable on its own) would have given, gaps of small pools included."""
    for net, top, used, excluded in [
        (IPv6Network("2001:db8::/64"), None, None, []),
        (IPv6Network("2001:db8::/64"), int(IPv6Address("2001:db8::5")), None, [IPv6Address("2001:db8::7")]),
        (IPv6Network("2001:db8::/124"), int(IPv6Address("2001:db8::c")), [1, 4, 12], [IPv6Address("2001:db8::e")]),
        (IPv6Network("2001:db8::/126"), int(IPv6Address("2001:db8::3")), [3], []),
    ]:
        used_ints = [int(net.network_address) + u for u in used] if used else used
        one_by_one, t, u = [], top, list(used_ints) if used_ints is not None else None
        for _ in range(20):
            addr = ipam6.next_free6(net, top=t, used=u, excluded=excluded)
            if addr is None:
                break
            one_by_one.append(addr)
            t = max(t or 0, int(addr))
            if u is not None:
                u.append(int(addr))
        assert ipam6.next_free6_many(net, top=top, count=20, used=used_ints, excluded=excluded) == one_by_one
        assert ipam6.next_free6_many(net, top=top, count=3, used=used_ints, excluded=excluded) == one_by_one[:3]
