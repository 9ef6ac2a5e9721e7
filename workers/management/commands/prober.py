"""python manage.py prober: the failure detector and failover driver (workers/prober.py). Run two or more;
one leads, the others stand by hot."""

from __future__ import annotations

import os
import socket

from django.core.management.base import BaseCommand, CommandParser

from ...prober import prober_run


class Command(BaseCommand):
    help = "Probe every host continuously and fail over (or back) as soon as a gateway's health changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}", help="shown in the logs")

    def handle(self, *args: object, **options: object) -> None:
        name = str(options["name"])
        self.stdout.write(f"prober {name} ready.")
        self.stdout.flush()
        prober_run(name)
