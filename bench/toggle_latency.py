"""Toggle latency: PUT /api/v1/apps/{id}/egress/ to "assigned" (and back to "disabled"), through the API,
the broker, a real worker, SSH and nft on the lab, polling the API every 20 ms. For comparison, the floor:
one SSH round trip over the pooled session and one small ``nft -f`` on the same lab.

Run once per per-command cost in BENCH_COMMAND_COSTS (default "0,50" ms: the lab's hosts wait that long
before every remote command, as a host in another zone would answer). The number of remote commands a
toggle runs one after another is the slope: (p50 at the cost - p50 at 0) / cost. The lab also counts
every command each host ran (health probes and sweeps included).

Targets (docs/ARCHITECTURE.md, "Targets"): p50 <= 500 ms, p95 <= 1.5 s to "assigned"; at 50 ms per
command p50 <= 2 x 50 ms + 200 ms = 300 ms, and <= 2.5 sequential remote commands per toggle.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import BenchEnv, log, print_table, summarize, target, write_result

NAME = "toggle_latency"
CYCLES = int(os.environ.get("BENCH_TOGGLES", "50"))
COSTS = [int(c) for c in os.environ.get("BENCH_COMMAND_COSTS", "0,50").split(",") if c.strip()]
POLL = 0.02
FLOOR_SAMPLES = 50
FLOOR_TABLE = "bn_floor"


def _poll_until(client, url: str, headers: dict, status: str, started: float, timeout: float = 30) -> float:
    while True:
        response = client.get(url, **headers)
        if response.status_code == 200 and json.loads(response.content)["status"] == status:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"{url}: not {status} after {timeout}s: {response.content[:300]!r}")
        time.sleep(POLL)


def measure_toggles(env: BenchEnv) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from egressportal.core.models import App
    from egressportal.tokens.models import ApiToken

    users = {u.username: u for u in get_user_model().objects.all()}
    apps = list(App.objects.filter(name__in=["shop-api", "billing", "crawler"]).order_by("name"))
    tokens = {u: ApiToken.objects.create(user=users[u], expiry=dt.timedelta(days=1), name=f"bench-{time.time_ns()}")[1]
              for u in users}
    client = Client()
    enable_s: list[float] = []
    disable_s: list[float] = []
    put_ms: list[float] = []
    for i in range(CYCLES):
        app = apps[i % len(apps)]
        headers = {"HTTP_AUTHORIZATION": f"Token {tokens[app.owner.username]}"}
        url = f"/api/v1/apps/{app.pk}/egress/"
        for kind, want, out in (("dedicated", "assigned", enable_s), ("shared", "disabled", disable_s)):
            started = time.perf_counter()
            response = client.put(url, data=json.dumps({"type": kind}), content_type="application/json", **headers)
            put_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise RuntimeError(f"PUT {url} {kind}: {response.status_code} {response.content[:300]!r}")
            out.append(_poll_until(client, url, headers, want, started))
        if (i + 1) % 10 == 0:
            log(f"{i + 1}/{CYCLES} toggles")
    return {"enable_s": enable_s, "disable_s": disable_s, "put_ms": put_ms}


def reconcile_breakdown() -> dict:
    """Per host kind: how long one changing reconcile took (read, apply, verify over SSH)."""
    from egressportal.core.models import Event

    out = {}
    for kind in ("gateway", "node"):
        durations = [e.data.get("duration_ms", 0.0) for e in Event.objects.filter(kind=f"{kind}.reconciled")]
        out[kind] = summarize(durations)
    return out


def measure_floor(env: BenchEnv) -> dict:
    from egressportal.core.models import Gateway
    from workers.reconcile import host_session

    session = host_session(Gateway.objects.get(name="gw1"))
    session.run(["true"])  # the handshake is not part of the floor: the workers keep their sessions
    ssh_ms = []
    for _ in range(FLOOR_SAMPLES):
        started = time.perf_counter()
        session.run(["true"])
        ssh_ms.append((time.perf_counter() - started) * 1000)
    script = (
        f"table ip {FLOOR_TABLE} {{}}\ndelete table ip {FLOOR_TABLE}\n"
        f"table ip {FLOOR_TABLE} {{\n  set s {{\n    type ipv4_addr\n    elements = {{ 198.19.255.1 }}\n  }}\n}}\n"
    )
    nft_ms = []
    try:
        for _ in range(FLOOR_SAMPLES):
            started = time.perf_counter()
            session.run(["nft", "-f", "-"], stdin=script)
            nft_ms.append((time.perf_counter() - started) * 1000)
    finally:
        session.run(["nft", "delete", "table", "ip", FLOOR_TABLE], check=False)
    # What the host's shell costs per command: sshd runs every command through the user's login shell,
    # and bash run by sshd reads ~/.bashrc. Same namespace, no SSH: with and without that startup.
    shell: dict[str, list[float]] = {"bash as sshd runs it (reads ~/.bashrc)": [], "plain sh -c true": []}
    as_sshd = ["env", "-i", "HOME=/root", "SHLVL=0", "SSH_CLIENT=198.18.2.1 50000 22", "PATH=/usr/bin:/bin",
               "bash", "-c", "true"]
    for _ in range(10):
        for label, argv in zip(shell, (as_sshd, ["sh", "-c", "true"]), strict=True):
            started = time.perf_counter()
            env.lab.host_exec("gw1", argv)
            shell[label].append((time.perf_counter() - started) * 1000)
    return {"ssh_true_ms": summarize(ssh_ms), "nft_apply_ms": summarize(nft_ms),
            "shell_ms": {label: summarize(v) for label, v in shell.items()}}


def main() -> int:
    if 0 not in COSTS:
        COSTS.insert(0, 0)  # the slope needs the baseline
    runs: dict[int, dict] = {}
    with BenchEnv(NAME) as env:
        env.start_worker(concurrency=2)
        time.sleep(2)  # let the first health round mark the hosts healthy
        for cost in COSTS:
            env.lab.set_command_cost(cost)
            time.sleep(1)  # a sweep or probe that started before the change is done
            env.lab.reset_command_counts()
            log(f"{CYCLES} enable/disable cycles through the API, {cost} ms per remote command")
            started = time.perf_counter()
            toggles = measure_toggles(env)
            elapsed = time.perf_counter() - started
            runs[cost] = {"toggles": toggles, "commands": env.lab.command_counts(), "seconds": elapsed}
        env.lab.set_command_cost(0)
        breakdown = reconcile_breakdown()
        env.stop_workers()
        floor = measure_floor(env)
        vendor = env.vendor
    rows = []
    figures: dict[int, dict] = {}
    base = None
    for cost, run in runs.items():
        enable = summarize([s * 1000 for s in run["toggles"]["enable_s"]])
        disable = summarize([s * 1000 for s in run["toggles"]["disable_s"]])
        put = summarize(run["toggles"]["put_ms"])
        if cost == 0:
            base = enable["p50"]
        sequential = (enable["p50"] - base) / cost if cost and base is not None else None
        per_toggle = {h: n / (2 * CYCLES) for h, n in run["commands"].items()}
        figures[cost] = {"enable_ms": enable, "disable_ms": disable, "put_ms": put, "sequential_commands": sequential,
                         "commands_per_toggle_per_host": per_toggle, "commands": run["commands"],
                         "raw": {"enable_ms": [s * 1000 for s in run["toggles"]["enable_s"]],
                                 "disable_ms": [s * 1000 for s in run["toggles"]["disable_s"]]}}
        label = f"{cost} ms/cmd"
        rows += [
            (f"{label}: PUT -> assigned", enable["n"], enable["p50"], enable["p95"], enable["max"]),
            (f"{label}: PUT -> disabled", disable["n"], disable["p50"], disable["p95"], disable["max"]),
            (f"{label}: PUT request itself (202)", put["n"], put["p50"], put["p95"], put["max"]),
        ]
    rows += [
        ("gateway reconcile (changing, all runs)", breakdown["gateway"]["n"], breakdown["gateway"]["p50"],
         breakdown["gateway"]["p95"], breakdown["gateway"]["max"]),
        ("node reconcile (changing, all runs)", breakdown["node"]["n"], breakdown["node"]["p50"],
         breakdown["node"]["p95"], breakdown["node"]["max"]),
        ("floor: SSH round trip (true)", floor["ssh_true_ms"]["n"], floor["ssh_true_ms"]["p50"],
         floor["ssh_true_ms"]["p95"], floor["ssh_true_ms"]["max"]),
        ("floor: nft -f small table", floor["nft_apply_ms"]["n"], floor["nft_apply_ms"]["p50"],
         floor["nft_apply_ms"]["p95"], floor["nft_apply_ms"]["max"]),
        *((f"host, no SSH: {label}", v["n"], v["p50"], v["p95"], v["max"]) for label, v in floor["shell_ms"].items()),
    ]
    table = print_table(f"Toggle latency ({vendor}, 1 worker x 2 processes, poll every 20 ms), ms",
                        ["measure", "n", "p50", "p95", "max"], rows)
    for cost, f in figures.items():
        hosts = ", ".join(f"{h} {n:.1f}" for h, n in f["commands_per_toggle_per_host"].items())
        seq = f"; sequential remote commands per enable (slope) {f['sequential_commands']:.2f}" if cost else ""
        print(f"{cost} ms/cmd: remote commands per toggle per host (probes and sweeps included): {hosts}{seq}")
    targets = [
        target("toggle to assigned p50", figures[0]["enable_ms"]["p50"], 500, "ms"),
        target("toggle to assigned p95", figures[0]["enable_ms"]["p95"], 1500, "ms"),
    ]
    for cost, f in figures.items():
        if cost:
            targets.append(target(f"toggle to assigned p50 at {cost} ms/cmd", f["enable_ms"]["p50"], 2 * cost + 200, "ms"))
            targets.append(target(f"sequential remote commands per toggle at {cost} ms/cmd",
                                  f["sequential_commands"], 2.5, "commands"))
    for t in targets:
        print(f"target {t['name']}: {t['value']:.2f} {t['unit']} {t['comparison']} {t['target']} -> "
              f"{'met' if t['met'] else 'MISSED'}")
    write_result(NAME, {"database": vendor, "table": table, "costs": figures, "reconcile_ms": breakdown,
                        "floor": floor, "targets": targets})
    return 0


if __name__ == "__main__":
    sys.exit(main())
