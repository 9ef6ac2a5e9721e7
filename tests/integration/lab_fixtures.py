"""Pytest fixtures for the network-namespace lab (a plugin module: no Django needed).

``lab``: one lab per test session, with a prefix and management index derived from the pid so that
parallel sessions (and a developer's own lab, prefix "ep", index 0) do not collide; always torn down.
``clean_lab``: the session lab brought back to its baseline before a test (sshd running, gateways
connected, no product state on any host, demo apps on their demo nodes).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from workers.lab import DEMO_APPS, HOST_PLAN, Lab, LabConfig, LabError

REQUIRED_TOOLS = ("ip", "nft", "/usr/sbin/sshd", "ssh-keygen", "curl")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _base36(n: int, width: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    for _ in range(width):
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def lab_config_for_session(offset: int = 0) -> LabConfig:
    """"t" + 3 characters of the pid, index 5..14: never the developer's default lab (ep, 0).

    EGRESS_TEST_LAB_INDEX pins the index (and offset + 1 for a second lab) when several test runs share
    one machine: two runs whose pids agree modulo 10 would otherwise share a management network."""
    pid = os.getpid() + offset
    pinned = os.environ.get("EGRESS_TEST_LAB_INDEX")
    index = int(pinned) + offset if pinned else pid % 10 + 5
    return LabConfig(prefix="t" + _base36(pid, 3), index=index)


def require_lab_prerequisites() -> None:
    """Skip without root; without the tools, fail in CI (the lab tests must run there) and skip elsewhere."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, sshd)")
    missing = [tool for tool in REQUIRED_TOOLS if not shutil.which(tool)]
    if missing:
        message = f"the lab needs {', '.join(missing)}: apt-get install iproute2 nftables openssh-server curl"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def restore_baseline(lab: Lab) -> None:
    for host, plan in HOST_PLAN.items():
        lab.start_sshd(host)
        if plan.role == "gateway":
            lab.restore_gateway(host)
        lab.flush_product_state(host)
    demo = {name: node for _, name, node in DEMO_APPS}
    for name in set(lab.apps) - set(demo):
        lab.remove_app(name)
    for name, node in demo.items():
        lab.add_app(name, node)
        # A fresh namespace and veth on the same address: nothing an earlier test did to the app's
        # link (or the node's neighbour entry for it) carries over.
        lab.rebuild_app(name)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    require_lab_prerequisites()
    the_lab = Lab(lab_config_for_session())
    try:
        the_lab.down()  # leftovers of a crashed session that had the same pid
        the_lab.up()
        for _, name, node in DEMO_APPS:
            the_lab.add_app(name, node)
    except LabError as exc:
        the_lab.down()
        pytest.fail(f"could not build the lab: {exc}", pytrace=False)
    try:
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    restore_baseline(lab)
    return lab
