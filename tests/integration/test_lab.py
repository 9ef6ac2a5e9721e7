"""The lab itself: real namespaces, real sshd, real nftables, real packets."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import paramiko
import pytest

from tests.integration.lab_fixtures import lab_config_for_session
from workers.lab import DEMO_APPS, HOST_PLAN, Lab, LabConfig, LabError
from workers.lab.plan import MAX_INDEX

pytestmark = [pytest.mark.lab]

NODE_IP = {"node1": "203.0.113.21", "node2": "203.0.113.22"}


def ssh_client(lab: Lab, host: str, pinned_key: str, client_key: Path | None = None) -> paramiko.SSHClient:
    """A client the way the workers connect: pinned host key, RejectPolicy, only the workers' key."""
    address = lab.hosts[host].mgmt_address
    key_type, key_b64 = pinned_key.split()[:2]
    client = paramiko.SSHClient()
    client.get_host_keys().add(address, key_type, paramiko.Ed25519Key(data=base64.b64decode(key_b64)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address, port=22, username="root", key_filename=str(client_key or lab.config.ssh_key_file),
        allow_agent=False, look_for_keys=False, timeout=5, banner_timeout=5, auth_timeout=5,
    )
    return client


def ssh_run(client: paramiko.SSHClient, command: str) -> str:
    _, stdout, _ = client.exec_command(command, timeout=10)
    out = stdout.read().decode()
    assert stdout.channel.recv_exit_status() == 0
    return out


def names_with_prefix(prefix: str, state_dir: Path) -> list[str]:
    """Everything of a lab, looked up independently of the Lab class."""
    found = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
             if ns.startswith(f"{prefix}-")]
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout)
    found += [link["ifname"] for link in links if link["ifname"].startswith(f"{prefix}-")]
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(state_dir).encode() in (proc / "cmdline").read_bytes():
                found.append(f"pid {proc.name}")
        except OSError:
            continue
    if state_dir.exists():
        found.append(str(state_dir))
    return found


def test_every_app_leaves_from_its_nodes_address_before_the_product(clean_lab):
    assert {name: a.node for name, a in clean_lab.apps.items()} == {name: node for _, name, node in DEMO_APPS}
    for name, app in clean_lab.apps.items():
        assert clean_lab.seen_ip(name) == NODE_IP[app.node], name
    assert clean_lab.status()["healthy"]


def test_app_cidrs_are_distinct_28s_of_their_nodes_pod_subnet(clean_lab):
    cidrs = [a.cidr for a in clean_lab.apps.values()]
    assert len(set(cidrs)) == len(cidrs)
    for app in clean_lab.apps.values():
        assert app.cidr.endswith("/28") and app.cidr != f"{HOST_PLAN[app.node].pod_cidr.network_address}/28"
        assert clean_lab.hosts[app.node].pod_cidr.startswith(app.cidr.rsplit(".", 1)[0])
        assert app.netns == f"{clean_lab.prefix}-app-{app.name}"


def test_sshd_accepts_the_workers_key_with_the_pinned_host_key(clean_lab):
    for host, h in clean_lab.hosts.items():
        with ssh_client(clean_lab, host, h.host_key) as client:
            # The session runs inside the host's namespace: it sees that host's addresses and nft.
            assert h.mgmt_address in ssh_run(client, "ip -br -4 addr show dev mgmt0")
            tables = ssh_run(client, "nft list tables")
            assert ("lab_nat" in tables) == (h.role == "node")


def test_sshd_is_rejected_under_a_wrong_pinned_key(clean_lab):
    wrong = clean_lab.hosts["gw2"].host_key
    assert wrong != clean_lab.hosts["gw1"].host_key
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(clean_lab, "gw1", wrong)


def test_sshd_refuses_another_client_key(clean_lab, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(paramiko.AuthenticationException):
        ssh_client(clean_lab, "node1", clean_lab.hosts["node1"].host_key, client_key=other)


def test_moving_an_app_changes_the_address_the_internet_sees(clean_lab):
    old = clean_lab.apps["shop-api"]
    moved = clean_lab.add_app("shop-api", "node2")
    assert moved.node == "node2" and moved.cidr != old.cidr
    assert clean_lab.seen_ip("shop-api") == NODE_IP["node2"]
    assert clean_lab.add_app("shop-api", "node2") == moved  # same node: kept as it is
    out = subprocess.run(["ip", "-n", clean_lab.netns("node1"), "-j", "link", "show"], capture_output=True, text=True)
    assert f"app{old.slot}" not in {link["ifname"] for link in json.loads(out.stdout)}
    clean_lab.add_app("shop-api", "node1")
    assert clean_lab.seen_ip("shop-api") == NODE_IP["node1"]
    clean_lab.remove_app("shop-api")
    assert "shop-api" not in clean_lab.apps
    with pytest.raises(LabError, match="no lab app named 'shop-api'"):
        clean_lab.seen_ip("shop-api")


def test_stop_and_start_sshd(clean_lab):
    h = clean_lab.hosts["gw1"]
    clean_lab.stop_sshd("gw1")
    assert clean_lab.status()["hosts"]["gw1"] == {"netns": True, "sshd": False, "reachable": False,
                                                   "mgmt_address": h.mgmt_address}
    with pytest.raises((paramiko.ssh_exception.NoValidConnectionsError, OSError)):
        ssh_client(clean_lab, "gw1", h.host_key)
    clean_lab.start_sshd("gw1")
    with ssh_client(clean_lab, "gw1", h.host_key) as client:
        assert ssh_run(client, "echo ok").strip() == "ok"


def test_up_again_repairs_dead_or_lost_processes(clean_lab):
    clean_lab.stop_sshd("node2")
    (clean_lab.state_dir / "echo.pid").unlink()  # the echo server runs, but the lab lost track of it
    (clean_lab.state_dir / "sshd_gw2.pid").unlink()
    clean_lab.up()
    assert clean_lab.status()["healthy"]
    assert clean_lab.seen_ip("crawler") == NODE_IP["node2"]
    with ssh_client(clean_lab, "gw2", clean_lab.hosts["gw2"].host_key) as client:
        assert ssh_run(client, "echo ok").strip() == "ok"


def test_regenerated_host_key_is_served_and_the_old_one_rejected(clean_lab):
    old = clean_lab.hosts["gw2"].host_key
    new = clean_lab.regenerate_host_key("gw2")
    assert new != old and new == clean_lab.hosts["gw2"].host_key
    with pytest.raises(paramiko.BadHostKeyException):
        ssh_client(clean_lab, "gw2", old)
    with ssh_client(clean_lab, "gw2", new) as client:
        assert ssh_run(client, "echo ok").strip() == "ok"


def test_flush_product_state_removes_what_the_product_wrote(clean_lab):
    gw = "gw1"
    clean_lab.host_exec(gw, ["nft", "-f", "-"], input=(
        "table ip egressportal {\n"
        "  set egress_addresses { type ipv4_addr; elements = { 203.0.113.200 } }\n"
        "  chain postrouting { type nat hook postrouting priority srcnat - 10; policy accept; }\n"
        "}\n"
    ))
    for argv in (
        ["ip", "addr", "add", "203.0.113.200/32", "dev", "public0"],
        ["ip", "addr", "add", "203.0.113.201/32", "dev", "public0"],  # not the product's: must stay
        ["ip", "route", "add", "198.18.64.0/24", "via", "198.18.100.21", "proto", "250"],
        ["ip", "route", "add", "default", "via", "198.18.100.12", "table", "7101", "proto", "250"],
        ["ip", "rule", "add", "fwmark", "0x10000/0xff0000", "lookup", "7101", "priority", "7101", "protocol", "250"],
    ):
        clean_lab.host_exec(gw, argv)
    clean_lab.flush_product_state(gw)
    assert clean_lab.host_exec(gw, ["nft", "list", "table", "ip", "egressportal"], check=False).returncode != 0
    addrs = clean_lab.host_exec(gw, ["ip", "-br", "-4", "addr", "show", "dev", "public0"]).stdout
    assert "203.0.113.200" not in addrs and "203.0.113.201" in addrs and "203.0.113.2/24" in addrs
    assert "proto 250" not in clean_lab.host_exec(gw, ["ip", "route", "show", "table", "all"]).stdout
    assert "7101" not in clean_lab.host_exec(gw, ["ip", "rule", "show"]).stdout
    assert "default via 203.0.113.1" in clean_lab.host_exec(gw, ["ip", "route", "show"]).stdout
    clean_lab.host_exec(gw, ["ip", "addr", "del", "203.0.113.201/32", "dev", "public0"])
    # Nothing to flush is fine, and the lab's own "shared egress" table on a node survives.
    clean_lab.flush_product_state("node1")
    clean_lab.flush_product_state("node1")
    assert "lab_nat" in clean_lab.host_exec("node1", ["nft", "list", "tables"]).stdout
    assert clean_lab.seen_ip("shop-api") == NODE_IP["node1"]


def test_cut_gateway_takes_it_off_transit_and_public_but_not_mgmt(clean_lab):
    def probe(target: str) -> int:
        # Nothing listens on port 9: "refused" (7) means reachable, a timeout (28) means cut off.
        return clean_lab.host_exec(
            "node1", ["curl", "-s", "--connect-timeout", "0.5", f"telnet://{target}:9"], check=False
        ).returncode

    gw = clean_lab.hosts["gw1"]
    assert probe(gw.transit_address) == 7 and probe(gw.public_address) == 7
    clean_lab.cut_gateway("gw1")
    try:
        assert probe(gw.transit_address) == 28 and probe(gw.public_address) == 28
        assert clean_lab.status()["hosts"]["gw1"]["reachable"]  # management still answers
    finally:
        clean_lab.restore_gateway("gw1")
    assert probe(gw.transit_address) == 7


def test_a_second_lab_coexists_and_down_removes_everything_even_after_a_crash(clean_lab):
    config = lab_config_for_session(offset=1)
    if config.index == clean_lab.index:
        config = LabConfig(prefix=config.prefix, index=(config.index - 5 + 1) % 10 + 5)
    other = Lab(config)
    try:
        other.up()
        other.add_app("solo", "node2")
        # Same addresses inside, separate worlds: both answer, each with its own host keys.
        assert other.seen_ip("solo") == NODE_IP["node2"]
        assert clean_lab.seen_ip("crawler") == NODE_IP["node2"]
        assert other.hosts["gw1"].host_key != clean_lab.hosts["gw1"].host_key
        with ssh_client(other, "gw1", other.hosts["gw1"].host_key) as client:
            assert other.hosts["gw1"].mgmt_address in ssh_run(client, "ip -br -4 addr show dev mgmt0")
        assert names_with_prefix(other.prefix, other.state_dir)
        # A crash: the state file and pidfiles are gone, the kernel objects and processes are not.
        for path in other.state_dir.iterdir():
            if path.name == "state.json" or path.suffix == ".pid":
                path.unlink()
    finally:
        other.down()
    assert names_with_prefix(other.prefix, other.state_dir) == []
    assert other.leftovers() == []
    assert clean_lab.seen_ip("crawler") == NODE_IP["node2"]  # the first lab never noticed


def test_lab_refuses_bad_names():
    with pytest.raises(ValueError):
        LabConfig(prefix="ep-1")
    with pytest.raises(ValueError):
        LabConfig(index=MAX_INDEX + 1)
    with pytest.raises(ValueError):
        LabConfig(index=-1)
    with pytest.raises(LabError):
        Lab(LabConfig(prefix="zq", index=1)).netns("gw9")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_down_of_a_lab_that_never_existed_is_harmless():
    lab = Lab(LabConfig(prefix="zq", index=1))
    lab.down()
    assert lab.leftovers() == []
