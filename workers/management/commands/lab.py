"""python manage.py lab up|down|status|place: the network-namespace lab (see workers/lab).

``place APP NODE`` (re)deploys a lab app on a node and reports the placements as the platform does
(through the same service as PUT /api/v1/nodes/{id}/placements/), e.g. to watch a redeploy keep the
app's dedicated IP."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from ...lab import DEMO_APPS, Lab, LabConfig, LabError, running_lab
from ...lab_register import lab_place, lab_register


class Command(BaseCommand):
    help = "Build (up), remove (down) or check (status) the lab: gateways, nodes and an echo server in namespaces."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status", "place"])
        parser.add_argument("app", nargs="?", help="place: the lab app (and database app) name")
        parser.add_argument("node", nargs="?", help="place: the lab node to run it on (node1, node2)")
        parser.add_argument("--prefix", default=os.environ.get("LAB_PREFIX", "ep"), help="name prefix (1-4 of a-z0-9)")
        parser.add_argument("--index", type=int, default=int(os.environ.get("LAB_INDEX", "0")),
                            help="0..15: management network 198.18.<index>.0/24")
        parser.add_argument("--gateways", type=int, default=None,
                            help="how many gateways (default 2, or what the running lab has; a fleet lab: e.g. 4)")
        parser.add_argument("--nodes", type=int, default=None,
                            help="how many nodes (default 2, or what the running lab has; a fleet lab: e.g. 40)")
        parser.add_argument("--no-demo", action="store_true", help="no demo users and apps")
        parser.add_argument("--no-register", action="store_true", help="do not register the lab in the database")

    def _fail(self, message: str) -> None:
        self.stderr.write(f"lab: {message}")
        sys.exit(1)

    def handle(self, *args: Any, **opts: Any) -> None:
        if os.geteuid() != 0:
            self._fail("needs root (network namespaces and sshd): run it with sudo or as root")
        running = running_lab(opts["prefix"])
        size = {"gateways": running.config.gateways, "nodes": running.config.nodes} if running else {}
        for key in ("gateways", "nodes"):
            if opts[key] is None:
                opts[key] = size.get(key, 2)
        try:
            config = LabConfig(prefix=opts["prefix"], index=opts["index"], ssh_key_file=Path(settings.EGRESS_SSH_KEY_FILE),
                               gateways=opts["gateways"], nodes=opts["nodes"])
        except ValueError as exc:
            self._fail(str(exc))
        lab = Lab(config, log=lambda message: self.stdout.write(f"  {message}"))
        try:
            getattr(self, f"_{opts['action']}")(lab, opts)
        except LabError as exc:
            self._fail(str(exc))

    def _up(self, lab: Lab, opts: dict[str, Any]) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"Building lab {lab.prefix} (index {lab.index})"))
        lab.up()
        info: dict[str, Any] = {}
        if not opts["no_register"]:
            self.stdout.write("  registering in the database")
            info = lab_register(lab, demo=not opts["no_demo"])
        elif not opts["no_demo"]:
            for _, name, node in DEMO_APPS:
                lab.add_app(name, node)
        self._summary(lab, info)

    def _place(self, lab: Lab, opts: dict[str, Any]) -> None:
        if not opts["app"] or not opts["node"]:
            self._fail("usage: manage.py lab place APP NODE")
        try:
            moved = lab_place(lab, name=opts["app"], node=opts["node"])
        except ValueError as exc:
            self._fail(str(exc))
        self.stdout.write(self.style.SUCCESS(f"{moved.name} runs on {moved.node} at {moved.cidr}; placements reported"))

    def _down(self, lab: Lab, opts: dict[str, Any]) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"Removing lab {lab.prefix}"))
        lab.down()
        self.stdout.write(self.style.SUCCESS(f"lab {lab.prefix} removed"))

    def _status(self, lab: Lab, opts: dict[str, Any]) -> None:
        status = lab.status()
        self.stdout.write(f"lab {lab.prefix} (index {lab.index}): {'healthy' if status['healthy'] else 'NOT healthy'}")
        self.stdout.write(f"  {'host':<8} {'mgmt address':<15} {'netns':<6} {'sshd':<6} {'ssh port'}")
        for name, h in status["hosts"].items():
            self.stdout.write(
                f"  {name:<8} {h['mgmt_address']:<15} {_yes(h['netns']):<6} {_yes(h['sshd']):<6} {_yes(h['reachable'])}"
            )
        inet = status["internet"]
        self.stdout.write(f"  internet netns {_yes(inet['netns'])}, echo server {_yes(inet['echo'])} ({inet['echo_url']})")
        for name, a in status["apps"].items():
            self.stdout.write(f"  app {name:<16} on {a['node']:<6} {a['cidr']:<18} netns {_yes(a['netns'])}")
        if not status["healthy"]:
            sys.exit(1)

    def _summary(self, lab: Lab, info: dict[str, Any]) -> None:
        w = self.stdout.write
        w("")
        w(f"  {'host':<7} {'role':<8} {'mgmt (ssh root@)':<17} {'transit':<15} {'public':<14} {'pods'}")
        for h in lab.hosts.values():
            w(f"  {h.name:<7} {h.role:<8} {h.mgmt_address:<17} {h.transit_address:<15} {h.public_address:<14} {h.pod_cidr or ''}")
        if lab.apps:
            w("")
            w(f"  {'app':<16} {'node':<6} {'source CIDR':<18} {'namespace'}")
            for a in lab.apps.values():
                w(f"  {a.name:<16} {a.node:<6} {a.cidr:<18} {a.netns}")
        w("")
        w(f"  echo server: {lab.echo_url}   egress pool: {info.get('pool_cidr', '203.0.113.128/25')}")
        if info.get("pool6_cidr"):
            w(f"  IPv6: echo server {lab.echo_url6}   egress pool: {info['pool6_cidr']}")
        w(f"  workers' SSH key: {lab.config.ssh_key_file}")
        where = next(iter(lab.apps.values())).netns if lab.apps else lab.netns("node1")
        w(f"  try: ip netns exec {where} curl -s {lab.echo_url}   (IPv6: curl -s '{lab.echo_url6}')")
        for user, password in info.get("new_passwords", {}).items():
            w(self.style.WARNING(f"  created user {user} with password {password} (shown once)"))


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"
