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


def test_parse_network_accepts_a_strict_ipv4_network():
    assert ipam.parse_network(" 203.0.113.0/28 ") == ipaddress.IPv4Network("203.0.113.0/28")
    assert ipam.parse_network("203.0.113.9/32") == ipaddress.IPv4Network("203.0.113.9/32")


def test_parse_network_messages_name_what_was_asked_for():
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_network("  ")
    assert str(info.value) == "Enter a CIDR such as 203.0.113.0/28."
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_network("nope", what="pool CIDR")
    assert str(info.value) == "'nope' is not a valid pool CIDR."
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_network("203.0.113.5/24")
    assert str(info.value) == "'203.0.113.5/24' has host bits set; did you mean 203.0.113.0/24?"
    with pytest.raises(ipam.IPAMError, match="no prefix length; write it as a CIDR such as 203.0.113.0/32"):
        ipam.parse_network("203.0.113.0")


@pytest.mark.parametrize("value", [None, 42, ["203.0.113.0/28"]])
def test_parse_network_and_address_refuse_non_text_cleanly(value):
    with pytest.raises(ipam.IPAMError, match="Enter a"):
        ipam.parse_network(value)
    with pytest.raises(ipam.IPAMError, match="Enter an"):
        ipam.parse_address(value)


def test_parse_address_messages_name_what_was_asked_for():
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_address("")
    assert str(info.value) == "Enter an IPv4 address such as 203.0.113.10."
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_address("x", what="transit address")
    assert str(info.value) == "'x' is not a valid transit address."


def test_usable_count_only_subtracts_exclusions_inside_the_usable_range():
    net = ipaddress.IPv4Network("203.0.113.0/29")  # usable .1 to .6
    assert ipam.usable_count(net) == 6
    assert ipam.usable_count(net, [ipaddress.IPv4Address("203.0.113.6")]) == 5  # the last usable one counts
    outside = [ipaddress.IPv4Address("203.0.113.7"), ipaddress.IPv4Address("203.0.113.9")]  # broadcast, next net
    assert ipam.usable_count(net, outside) == 6


def test_iter_available_covers_the_whole_usable_range_in_order():
    net = ipaddress.IPv4Network("203.0.113.8/30")  # usable .9 and .10
    assert [str(a) for a in ipam.iter_available(net, [])] == ["203.0.113.9", "203.0.113.10"]
    assert [str(a) for a in ipam.iter_available(ipaddress.IPv4Network("203.0.113.8/31"), [])] == [
        "203.0.113.8", "203.0.113.9",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.18.64.17", "198.18.64.17/32"),
        (" 198.18.64.17 ", "198.18.64.17/32"),
        ("198.18.64.16/28", "198.18.64.16/28"),
        ("198.18.64.0/24", "198.18.64.0/24"),  # the widest allowed
    ],
)
def test_parse_placement_accepts_an_address_or_a_small_cidr(value, expected):
    assert ipam.parse_placement(value) == ipaddress.IPv4Network(expected)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("198.18.64.0/23", "198.18.64.0/23 is too wide: a placement is an instance's address or a CIDR of at most "
                           "/24 (256 addresses)."),
        ("0.0.0.0/0", "0.0.0.0/0 is too wide"),
        ("198.18.64.300", "'198.18.64.300' is not a valid placement address."),
        ("198.18.64.17/28", "'198.18.64.17/28' has host bits set; did you mean 198.18.64.16/28?"),
        ("2001:db8::1", "'2001:db8::1' is IPv6"),
        ("", "Enter a placement address or CIDR such as"),
        (None, "Enter a placement address or CIDR such as"),
    ],
)
def test_parse_placement_refuses_with_actionable_message(value, message):
    with pytest.raises(ipam.IPAMError) as info:
        ipam.parse_placement(value)
    assert str(info.value).startswith(message), str(info.value)


def test_usable_prefixes_cover_exactly_what_the_pool_can_hand_out():
    net = ipaddress.IPv4Network("203.0.113.0/24")
    excluded = [ipaddress.IPv4Address("203.0.113.1"), ipaddress.IPv4Address("203.0.113.77")]
    prefixes = ipam.usable_prefixes(net, excluded)
    covered = {a for p in prefixes for a in p}
    assert covered == {a for a in net if a not in excluded and a not in (net.network_address, net.broadcast_address)}
    assert len(prefixes) == len(list(ipaddress.collapse_addresses(prefixes)))  # the fewest
    assert ipam.usable_prefixes(ipaddress.IPv4Network("203.0.113.8/31")) == [ipaddress.IPv4Network("203.0.113.8/31")]
    assert ipam.usable_prefixes(ipaddress.IPv4Network("203.0.113.0/30"), [ipaddress.IPv4Address("203.0.113.9")]) == [
        ipaddress.IPv4Network("203.0.113.1/32"), ipaddress.IPv4Network("203.0.113.2/32")
    ]
