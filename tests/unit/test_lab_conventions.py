"""The lab simulates a reboot by removing the product's state with its own commands (workers/lab), not
the product's renderer or parser: the tests that use the lab as their independent view of a host must not
share a bug with the code under test. What it must share are the conventions, checked here: if the
product's table, route protocol or routing tables moved, the lab's "reboot" would silently remove
nothing and the restore tests would pass without testing anything."""

from __future__ import annotations

from egressportal.dataplane import NFT_TABLE, RT_PROTO, slot_table
from egressportal.dataplane.validate import MAX_SLOT
from workers.lab import topology


def test_the_lab_knows_where_the_product_keeps_its_state():
    assert topology.PRODUCT_TABLE == NFT_TABLE
    assert topology.PRODUCT_RT_PROTO == RT_PROTO
    assert topology.PRODUCT_TABLES == range(slot_table(1), slot_table(MAX_SLOT) + 1)
    assert topology.NFT_LAB_TABLE != NFT_TABLE
