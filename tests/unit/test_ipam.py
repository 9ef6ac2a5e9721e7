"""Pure IP arithmetic: no database."""

import ipaddress

import pytest

from egressportal.core import ipam


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "Enter a"),
        ("not-a-cidr", "not a valid"),
        ("203.0.113.5/24", "host bits set; did you mean 203.0.113.0/24"),
        ("2001:db8::/64", "IPv6"),
        ("203.0.113.0", "no prefix length"),
        ("203.0.113.0/33", "not a valid"),
        ("203.0.113.0/24; rm -rf /", "not a valid"),
    ],
)
def test_parse_network_rejects_with_actionable_message(text, fragment):
    with pytest.raises(ipam.IPAMError, match=fragment):
        ipam.parse_network(text)


def test_parse_address():
    assert ipam.parse_address(" 203.0.113.7 ") == ipaddress.IPv4Address("203.0.113.7")
    with pytest.raises(ipam.IPAMError, match="IPv6"):
        ipam.parse_address("2001:db8::1")
    with pytest.raises(ipam.IPAMError, match="not a valid"):
        ipam.parse_address("203.0.113.256")


def test_usable_range_skips_network_and_broadcast_but_not_on_small_prefixes():
    net = ipaddress.IPv4Network("203.0.113.0/29")
    first, last = ipam.usable_range(net)
    assert (ipaddress.IPv4Address(first), ipaddress.IPv4Address(last)) == (
        ipaddress.IPv4Address("203.0.113.1"),
        ipaddress.IPv4Address("203.0.113.6"),
    )
    assert ipam.usable_count(ipaddress.IPv4Network("203.0.113.8/31")) == 2
    assert ipam.usable_count(ipaddress.IPv4Network("203.0.113.8/32")) == 1
    assert ipam.usable_count(net, [ipaddress.IPv4Address("203.0.113.1"), ipaddress.IPv4Address("203.0.113.0")]) == 5


def test_iter_available_skips_used_and_excluded():
    net = ipaddress.IPv4Network("203.0.113.0/29")
    used = {int(ipaddress.IPv4Address("203.0.113.1")), int(ipaddress.IPv4Address("203.0.113.3"))}
    free = list(ipam.iter_available(net, used, [ipaddress.IPv4Address("203.0.113.2")]))
    assert [str(a) for a in free] == ["203.0.113.4", "203.0.113.5", "203.0.113.6"]


def test_overlapping():
    a = ipaddress.IPv4Network("198.18.0.0/24")
    others = [ipaddress.IPv4Network("198.18.0.128/25"), ipaddress.IPv4Network("198.18.1.0/24")]
    assert ipam.overlapping(a, others) == [others[0]]
