"""A drained gateway's teardown comes from the renderer like every other command a host runs."""

from __future__ import annotations

from egressportal.dataplane import GatewayState, Plan, plan_gateway_decommission, table_exists_command


def _actual(**kw) -> GatewayState:
    return GatewayState.build(public_interface="eth1", **kw)


def test_decommission_removes_addresses_routes_then_the_tables():
    actual = _actual(
        addresses=["203.0.113.130"],
        return_routes={"198.18.64.0/24": "198.18.32.11"},
        snat={"198.18.64.16/28": "203.0.113.130"},
    )
    plan = plan_gateway_decommission(actual, table_exists=True)
    assert plan.pre_ip == [
        "route del local 203.0.113.130/32 dev lo table 255 proto 250",
        "route del 198.18.64.0/24 via 198.18.32.11 proto 250",
    ]
    # The ARP guard goes after the pool routes it guards.
    assert plan.nft == "delete table ip egressportal\ntable arp egressportal {}\ndelete table arp egressportal\n"
    assert [argv for argv, _ in plan.steps()] == [["ip", "-batch", "-"], ["nft", "-f", "-"]]  # ip first, then the table
    assert plan.post_ip == [] and not plan.is_empty


def test_decommission_of_a_clean_gateway_does_nothing():
    assert plan_gateway_decommission(_actual(), table_exists=False) == Plan()
    only_table = plan_gateway_decommission(_actual(), table_exists=True)
    assert only_table.pre_ip == [] and only_table.nft.startswith("delete table ip egressportal\n")


def test_decommission_removes_old_layout_addresses_too():
    old = _actual(addresses=["203.0.113.130"], legacy_addresses=["203.0.113.130"], pools=[])
    assert plan_gateway_decommission(old, table_exists=True).pre_ip == ["addr del 203.0.113.130/32 dev eth1"]


def test_table_probe_reads_the_products_table():
    assert table_exists_command() == ["nft", "-j", "list", "table", "ip", "egressportal"]
