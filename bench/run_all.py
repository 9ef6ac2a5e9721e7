"""Run every benchmark, one after the other (each builds and removes its own lab, database, Redis and
workers), then print the targets side by side. Exit status 0 when every benchmark ran, whatever the
figures; the figures are in bench/results/*.json.

    .venv/bin/python bench/run_all.py            # all of them
    .venv/bin/python bench/run_all.py burst      # some of them
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["toggle_latency", "burst", "dataplane_scale", "failover", "api_latency", "placement_move", "node_scope"]


def main(argv: list[str]) -> int:
    chosen = argv or BENCHMARKS
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    durations: dict[str, float] = {}
    failed: list[str] = []
    for name in chosen:
        print(f"\n==> {name}", flush=True)
        started = time.monotonic()
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=False).returncode
        durations[name] = time.monotonic() - started
        if rc != 0:
            failed.append(name)
    print("\nTargets")
    for name in chosen:
        path = HERE / "results" / f"{name}.json"
        if name in failed or not path.exists():
            print(f"  {name:16} FAILED to run ({durations[name]:.0f} s)")
            continue
        for t in json.loads(path.read_text()).get("targets", []):
            verdict = "met" if t["met"] else "MISSED"
            print(f"  {name:16} {t['name']:45} {t['value']:>10.1f} {t['unit']:6} {t['comparison']} {t['target']:<6} {verdict}")
    total = sum(durations.values())
    print("\n" + ", ".join(f"{n} {d:.0f} s" for n, d in durations.items()) + f"; total {total / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
