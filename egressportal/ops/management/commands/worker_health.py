"""Liveness of a Celery worker and of beat, for a container probe.

    python manage.py worker_health            # both
    python manage.py worker_health --worker   # this machine's worker heartbeat (a local file)
    python manage.py worker_health --beat     # the last sweep (Redis): beat schedules it, a worker runs it

Exits 0 when healthy, 1 with the reason on stderr when not. Never touches the
database; reading the sweep time needs Redis (a timeout of 1 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from egressportal.ops.liveness import heartbeat_file, last_sweep_timestamp, worker_heartbeat_age


class Command(BaseCommand):
    help = "Exit 0 when the worker's heartbeat and beat's last sweep are fresh (a liveness probe)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--worker", action="store_true", help="check the worker heartbeat only")
        parser.add_argument("--beat", action="store_true", help="check the last sweep only")
        parser.add_argument(
            "--max-age", type=float, default=None,
            help="heartbeat age limit in seconds (default: 6 heartbeat periods, 30 s)",
        )
        parser.add_argument(
            "--sweep-max-age", type=float, default=None,
            help="last sweep age limit in seconds (default: 3 sweep periods + 10 s)",
        )
        parser.add_argument("--heartbeat-file", default=None, help="default: EGRESS_WORKER_HEARTBEAT_FILE")

    def handle(self, *args: Any, **opts: Any) -> None:
        check_worker = opts["worker"] or not opts["beat"]
        check_beat = opts["beat"] or not opts["worker"]
        problems: list[str] = []
        report: list[str] = []
        if check_worker:
            period = settings.EGRESS_WORKER_HEARTBEAT_SECONDS
            limit = opts["max_age"] if opts["max_age"] is not None else 6 * period
            path = Path(opts["heartbeat_file"]) if opts["heartbeat_file"] else heartbeat_file()
            age = worker_heartbeat_age(path)
            if age is None:
                problems.append(f"no worker heartbeat in {path}")
            elif age > limit:
                problems.append(f"worker heartbeat is {age:.1f}s old (limit {limit:g}s)")
            else:
                report.append(f"worker heartbeat {age:.1f}s ago")
        if check_beat:
            limit = opts["sweep_max_age"]
            if limit is None:
                limit = 3 * settings.EGRESS_SWEEP_SECONDS + 10
            stamp = last_sweep_timestamp()
            if stamp is None:
                problems.append("no sweep recorded (is beat running? is Redis reachable?)")
            elif time.time() - stamp > limit:
                problems.append(f"last sweep {time.time() - stamp:.1f}s ago (limit {limit:g}s)")
            else:
                report.append(f"last sweep {time.time() - stamp:.1f}s ago")
        if problems:
            self.stderr.write("unhealthy: " + "; ".join(problems))
            raise SystemExit(1)
        self.stdout.write("healthy: " + "; ".join(report))
