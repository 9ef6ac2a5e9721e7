"""The README's run command, driven the way a new user meets it: start
`./run`, wait for the URL, log in over HTTP, enable egress for a demo app, see
it assigned, check which address the internet sees, stop it with Ctrl-C and
find nothing left running."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.http_client import PortalClient
from tests.integration.worker_fixtures import wait_for

pytestmark = [pytest.mark.lab, pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_command_end_to_end(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the run command builds the lab, which needs root")
    port, dead_redis = free_port(), free_port()
    prefix = "r" + format(os.getpid() % 36**3, "x")[:3]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EGRESS_", "DATABASE_", "REDIS_"))},
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # Nothing listens there: ./run must start a Redis of its own.
        "REDIS_URL": f"redis://127.0.0.1:{dead_redis}/0",
        "EGRESS_LAB_PREFIX": prefix,
        "LAB_INDEX": os.environ.get("EGRESS_TEST_RUN_LAB_INDEX", str(os.getpid() % 5 + 1)),
    }
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["./run"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "is running at" in log.read_text() or proc.poll() is not None, timeout=180,
                 interval=0.5, what="the run command's banner")
        text = log.read_text()
        assert proc.poll() is None, text[-3000:]
        url = re.search(r"running at (http://\S+)", text).group(1)
        alice_password = re.search(r"alice / (\S+)", text).group(1)

        client = PortalClient(url)
        client.login("alice", alice_password)
        status, apps = client.json("GET", "/api/v1/apps/?name=shop-api")
        assert status == 200 and apps["count"] == 1, apps
        app_id = apps["results"][0]["id"]
        status, egress = client.json("PUT", f"/api/v1/apps/{app_id}/egress/", {"type": "dedicated"})
        assert status == 202, egress
        wait_for(lambda: client.json("GET", f"/api/v1/apps/{app_id}/egress/")[1]["status"] == "assigned",
                 timeout=60, interval=0.2, what="assigned")
        egress = client.json("GET", f"/api/v1/apps/{app_id}/egress/")[1]
        active = next(ip["address"] for ip in egress["ips"] if ip["role"] == "active")
        status, fragment = client.request("POST", f"/apps/{app_id}/check-egress/", headers={"HX-Request": "true"})
        assert status == 200
        assert f'data-seen="{active}"' in fragment, fragment
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    text = log.read_text()
    assert "nothing left running" in text, text[-2000:]
    assert not listening(port)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in netns.splitlines() if line.startswith(f"{prefix}-")]
    leftovers = subprocess.run(["pgrep", "-f", f"127.0.0.1:{port}|var/lab/{prefix}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout
