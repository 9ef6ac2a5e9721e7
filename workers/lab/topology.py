"""The lab: real hosts (network namespaces with a real sshd each) on one machine.

Everything is derived from ``LabConfig.prefix``, so two labs live side by side and ``down`` finds what to
remove by name, also after a crash. The host's root namespace gets only the management link (a bridge
with 198.18.<index>.1/24 and one veth per host); every other segment lives inside the namespaces.

    root ns: <p>-mgmt bridge ── <p>-m<host> veth ── mgmt0 in <p>-<host> (sshd listens here)
    <p>-sw:  br-transit (198.18.100.0/24) and br-public (203.0.113.0/24) joining gw1, gw2, node1, node2
             (and the router <p>-inet on br-public)
    <p>-inet: router 203.0.113.1 + 198.51.100.1, echo server on 198.51.100.10:80
    <p>-nodeN: pods0 bridge 198.18.64+N-1.1/24; app namespaces <p>-app-<name> hang off it

A fleet lab (``LabConfig(gateways=4, nodes=40)``) has more gateways and nodes built the same way (plan.host_plan):
each a namespace with its links, sshd and, on a node, the pod bridge; apps only where a test or benchmark puts
them. Hosts are set up and their sshd started in parallel.

Transit, public, pod and internet segments are dual-stack (IPv6 from 2001:db8::/32, see plan.py); management
is IPv4 only, and the root namespace never gets an IPv6 address or packet from the lab.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv6Address
from pathlib import Path
from typing import Any

from . import plan
from .plan import IF

__all__ = ["Lab", "LabApp", "LabConfig", "LabError", "LabHost", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
ECHO_SCRIPT = Path(__file__).resolve().with_name("echo.py")
NFT_LAB_TABLE = "lab_nat"  # the lab's own "shared egress"; never the product's table
PRODUCT_TABLE = "egressportal"
PRODUCT_RT_PROTO = 250
PRODUCT_TABLES = range(7101, 7351)
# iputils-arping: the gateways' gratuitous ARP (optional for the product, wanted in the lab).
_APT_PACKAGES = ("iproute2", "nftables", "openssh-server", "curl", "iputils-arping")
_REQUIRED = {"ip": "iproute2", "nft": "nftables", SSHD: "openssh-server", "ssh-keygen": "openssh-client", "curl": "curl",
             "arping": "iputils-arping"}


class LabError(RuntimeError):
    """Anything the lab could not do, with a message a person can act on."""


@dataclass
class LabConfig:
    prefix: str = "ep"
    index: int = 0
    state_dir: Path | None = None  # default <repo>/var/lab/<prefix>
    ssh_key_file: Path | None = None  # default <state_dir>/workers_ed25519
    gateways: int = 2  # a fleet lab has more (gw1..gwN, nodes node1..nodeN): plan.host_plan
    nodes: int = 2

    def __post_init__(self) -> None:
        plan.check_prefix(self.prefix)
        plan.mgmt_network(self.index)
        plan.host_plan(self.gateways, self.nodes)
        # Absolute: sshd needs absolute paths, and down() finds our processes by this path.
        self.state_dir = Path(self.state_dir).absolute() if self.state_dir else REPO_ROOT / "var" / "lab" / self.prefix
        self.ssh_key_file = Path(self.ssh_key_file).absolute() if self.ssh_key_file else self.state_dir / "workers_ed25519"


@dataclass(frozen=True)
class LabHost:
    name: str
    netns: str
    role: str  # "gateway" | "node"
    mgmt_address: str
    transit_address: str
    public_address: str
    public_interface: str
    host_key: str  # "ssh-ed25519 AAAA...", read from the key file sshd uses ("" before the first up)
    pod_cidr: str | None = None
    ssh_port: int = 22
    ssh_user: str = "root"
    transit_address6: str = ""
    public_address6: str = ""
    pod_cidr6: str | None = None


@dataclass(frozen=True)
class LabApp:
    name: str
    node: str
    netns: str
    address: str  # the instance's address
    cidr: str  # its source CIDR (the /28 it was given)
    slot: int = field(default=0, compare=False)  # which /28 of the node's pod /24

    @property
    def address6(self) -> str:
        """The instance's IPv6 address (derived from node and slot: older state files need no change)."""
        return str(plan.app_net6(self.node, self.slot)[1])

    @property
    def cidr6(self) -> str:
        return str(plan.app_net6(self.node, self.slot)[0])


def _run(
    argv: list[str], *, input: str | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)} failed (exit {proc.returncode}): {' | '.join(detail[-5:])}")
    return proc


def _no_proxy_env() -> dict[str, str]:
    # A proxy from the environment would carry lab traffic off the machine: never inherit one.
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pids: set[int], *, grace: float = 2.0) -> None:
    pids = {p for p in pids if p > 1 and p != os.getpid()}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = {p for p in pids if _pid_alive(p)}
            if not pids:
                return
            time.sleep(0.02)
    # Children of this process linger as zombies until reaped; reap what we can.
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _parallel(fn: Callable[[str], object], items: Iterable[str]) -> None:
    # A fleet lab has dozens of hosts; their set-up is mostly waiting on ip, nft and sshd start-up.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


def _banner(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


class Lab:
    """One lab, named by its prefix. Safe to instantiate in any process: the state lives in the kernel
    (namespaces, links) and in ``state_dir`` (keys, sshd configs, pidfiles, ``state.json`` with the apps)."""

    def __init__(self, config: LabConfig | None = None, *, log: Callable[[str], None] | None = None) -> None:
        self.config = config or LabConfig()
        self.prefix = self.config.prefix
        self.index = self.config.index
        self.state_dir: Path = self.config.state_dir  # type: ignore[assignment]
        self.log = log or (lambda message: None)
        self.host_plan: dict[str, plan.HostPlan] = plan.host_plan(self.config.gateways, self.config.nodes)
        self._command_base: dict[str, int] = {}  # remote_commands() at the last reset_command_counts()

    # ---- names and addresses -------------------------------------------------------------------------------

    def netns(self, host: str) -> str:
        """The namespace of a lab host ("gw1", ..., "inet", "sw") or of an app ("app:<name>")."""
        if host.startswith("app:"):
            return plan.app_netns(self.prefix, plan.check_app_name(host[4:]))
        if host not in self.host_plan and host not in ("inet", "sw"):
            raise LabError(f"unknown lab host {host!r}; hosts are {', '.join([*self.host_plan, 'inet', 'sw'])}")
        return f"{self.prefix}-{host}"

    @property
    def mgmt_bridge(self) -> str:
        return plan.root_mgmt_bridge(self.prefix)

    @property
    def echo_url(self) -> str:
        return f"http://{plan.ECHO_ADDRESS}/" if plan.ECHO_PORT == 80 else f"http://{plan.ECHO_ADDRESS}:{plan.ECHO_PORT}/"

    @property
    def echo_url6(self) -> str:
        return f"http://[{plan.ECHO_ADDRESS6}]:{plan.ECHO_PORT}/"

    def _host_key_path(self, host: str) -> Path:
        return self.state_dir / f"ssh_host_{host}_ed25519"

    def _sshd_config_path(self, host: str) -> Path:
        return self.state_dir / f"sshd_{host}.conf"

    def _sshd_pidfile(self, host: str) -> Path:
        return self.state_dir / f"sshd_{host}.pid"

    def sshd_log(self, host: str) -> Path:
        """sshd's own log of ``host``: one "Starting session" line per remote command it ran."""
        return self.state_dir / f"sshd_{host}.log"

    def remote_commands(self, host: str) -> int:
        """How many commands the workers have run on ``host`` so far, as its sshd saw them (the proof that
        a change touched only the hosts it concerns)."""
        log = self.sshd_log(host)
        if not log.exists():
            return 0
        with log.open(errors="replace") as f:
            # "command" or, through the lab's wrapper (ForceCommand), "forced-command".
            return sum(1 for line in f if "Starting session: command" in line or "Starting session: forced-command" in line)

    @property
    def _echo_pidfile(self) -> Path:
        return self.state_dir / "echo.pid"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def _lock_file(self) -> Path:
        return self.state_dir.with_name(f".{self.state_dir.name}.lock")

    def host_key(self, host: str) -> str:
        try:
            return " ".join(self._host_key_path(host).with_suffix(".pub").read_text().split()[:2])
        except OSError:
            return ""

    @property
    def hosts(self) -> dict[str, LabHost]:
        return {
            name: LabHost(
                name=name,
                netns=self.netns(name),
                role=h.role,
                mgmt_address=str(h.mgmt_address(self.index)),
                transit_address=str(h.transit_address),
                public_address=str(h.public),
                public_interface=IF.PUBLIC,
                host_key=self.host_key(name),
                pod_cidr=str(h.pod_cidr) if h.pod_cidr else None,
                transit_address6=str(h.transit_address6),
                public_address6=str(h.public6),
                pod_cidr6=str(h.pod_cidr6) if h.pod_cidr6 else None,
            )
            for name, h in self.host_plan.items()
        }

    @property
    def apps(self) -> dict[str, LabApp]:
        return {name: LabApp(**a) for name, a in sorted(self._load_state().get("apps", {}).items())}

    # ---- state file and lock -------------------------------------------------------------------------------

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self._state_file)  # atomic: a reader never sees half a file

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # One writer at a time across processes (the command, tests, the portal's demo helpers).
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_file, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- low-level helpers ---------------------------------------------------------------------------------

    def _list_netns(self) -> set[str]:
        out = _run(["ip", "netns", "list"]).stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def _our_netns(self) -> set[str]:
        return {ns for ns in self._list_netns() if ns.startswith(f"{self.prefix}-")}

    def _links(self, netns: str | None) -> set[str]:
        argv = ["ip", "-j", "link", "show"] if netns is None else ["ip", "-n", netns, "-j", "link", "show"]
        return {link["ifname"] for link in json.loads(_run(argv).stdout or "[]")}

    def _ip_batch(self, netns: str | None, lines: list[str]) -> None:
        if not lines:
            return
        argv = ["ip", "-batch", "-"] if netns is None else ["ip", "-n", netns, "-batch", "-"]
        _run(argv, input="\n".join(lines) + "\n")

    def _sysctl(self, netns: str, settings: dict[str, str | int]) -> None:
        argv = ["ip", "netns", "exec", netns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())]
        _run(argv)

    def _ns_inode(self, netns: str) -> int | None:
        try:
            return os.stat(f"/run/netns/{netns}").st_ino
        except OSError:
            return None

    def _pid_in_netns(self, pid: int | None, netns: str) -> bool:
        if pid is None or not _pid_alive(pid):
            return False
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino == self._ns_inode(netns)
        except OSError:
            return False

    def _netns_pids(self, netns: str) -> set[int]:
        out = _run(["ip", "netns", "pids", netns], check=False).stdout
        return {int(p) for p in out.split() if p.isdigit()}

    def host_exec(
        self, host: str, argv: list[str], input: str | None = None, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` inside a lab host's namespace (``host`` as for :meth:`netns`)."""
        return _run(["ip", "netns", "exec", self.netns(host), *argv], input=input, check=check, timeout=timeout)

    # ---- prerequisites -------------------------------------------------------------------------------------

    def check_prerequisites(self, *, install: bool = True) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, sshd on port 22): run it as root")
        missing = [tool for tool in _REQUIRED if not shutil.which(tool)]
        if missing and install and shutil.which("apt-get"):
            self.log(f"installing {', '.join(_APT_PACKAGES)} (missing: {', '.join(missing)})")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *_APT_PACKAGES]):
                subprocess.run(argv, env=env, capture_output=True, check=False, timeout=600)
            missing = [tool for tool in _REQUIRED if not shutil.which(tool)]
        if missing:
            packages = sorted({_REQUIRED[t] for t in missing})
            raise LabError(f"the lab needs {', '.join(missing)}: install {' '.join(packages)}")

    # ---- up ------------------------------------------------------------------------------------------------

    def up(self) -> None:
        """Build whatever is missing and (re)start dead sshd/echo processes. Idempotent."""
        started = time.monotonic()
        self.check_prerequisites()
        with self._locked():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._check_index_free()
            self.log("keys: workers' key and one host key per host")
            self._ensure_keys()
            self.log("namespaces")
            self._ensure_namespaces()
            self.log(f"management link {self.mgmt_bridge} {plan.mgmt_bridge_address(self.index)} (root namespace)")
            self._ensure_root_mgmt()
            self.log("transit and public segments (in the switch namespace)")
            self._ensure_switch()
            self.log("gateways, nodes and the internet router")
            _parallel(self._configure_host, self.host_plan)
            self._configure_internet()
            state = self._load_state()
            state.update(prefix=self.prefix, index=self.index, gateways=self.config.gateways, nodes=self.config.nodes)
            state.setdefault("apps", {})
            self._save_state(state)
            for app in list(self.apps.values()):
                if self._ns_inode(app.netns) is None or self.app_port_missing(app):
                    self.log(f"app {app.name}: rebuilding on {app.node}")
                    self._build_app(app)
            self.log("sshd on every host")
            self._write_command_wrapper()
            cost = os.environ.get("EGRESS_LAB_COMMAND_COST_MS")
            if cost is not None:
                self.set_command_cost(int(cost or 0))
            _parallel(self._ensure_sshd, self.host_plan)
            self.log(f"echo server on {plan.ECHO_ADDRESS}:{plan.ECHO_PORT}")
            self._ensure_echo()
            self._wait_sshd(list(self.host_plan))
        self.log(f"lab {self.prefix} is up ({time.monotonic() - started:.1f}s)")

    def _check_index_free(self) -> None:
        # Two labs with one index would both put 198.18.<index>.1/24 in the root namespace.
        net = plan.mgmt_network(self.index)
        for link in json.loads(_run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
            for a in link.get("addr_info", []):
                if link["ifname"] != self.mgmt_bridge and IPv4Interface(f"{a['local']}/{a['prefixlen']}").network.overlaps(net):
                    raise LabError(
                        f"lab index {self.index} ({net}) is already used by {link['ifname']} in the root namespace; "
                        "pick another --index"
                    )

    def _ensure_keys(self) -> None:
        key = Path(self.config.ssh_key_file or self.state_dir / "workers_ed25519")
        if not key.exists() or not key.with_suffix(".pub").exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.unlink(missing_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"egressportal-workers@lab-{self.prefix}", "-f", str(key)])
        key.chmod(0o600)
        (self.state_dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
        missing = [h for h in self.host_plan
                   if not self._host_key_path(h).exists() or not self._host_key_path(h).with_suffix(".pub").exists()]
        _parallel(self._new_host_key, missing)

    def _new_host_key(self, host: str) -> None:
        path = self._host_key_path(host)
        path.unlink(missing_ok=True)
        path.with_suffix(".pub").unlink(missing_ok=True)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host}@lab-{self.prefix}", "-f", str(path)])

    def _ensure_namespaces(self) -> None:
        wanted = [self.netns(h) for h in (*self.host_plan, "inet", "sw")]
        missing = [ns for ns in wanted if ns not in self._list_netns()]
        self._ip_batch(None, [f"netns add {ns}" for ns in missing])
        # Every time: an earlier up may have died between "add" and the settings.
        _parallel(self._init_netns, wanted)

    def _init_netns(self, netns: str) -> None:
        # Set before any link exists, so every link inherits "default": no IPv6 chatter, forwarding on,
        # rp_filter loose (a node gets replies of steered traffic over transit, not over its public link).
        self._sysctl(
            netns,
            {
                "net.ipv6.conf.all.disable_ipv6": 1,
                "net.ipv6.conf.default.disable_ipv6": 1,
                "net.ipv4.ip_forward": 1,
                "net.ipv4.conf.all.rp_filter": 2,
                "net.ipv4.conf.default.rp_filter": 2,
            },
        )
        self._ip_batch(netns, ["link set lo up"])

    def _ensure_root_mgmt(self) -> None:
        links = self._links(None)
        create: list[str] = []
        new: list[str] = []
        if self.mgmt_bridge not in links:
            create.append(f"link add {self.mgmt_bridge} type bridge")
            new.append(self.mgmt_bridge)
        for host in self.host_plan:
            port = plan.root_mgmt_port(self.prefix, host)
            if port not in links:
                if IF.MGMT in self._links(self.netns(host)):  # half of a pair cannot exist; an old name can
                    self._ip_batch(self.netns(host), [f"link del {IF.MGMT}"])
                create.append(f"link add {port} type veth peer name {IF.MGMT} netns {self.netns(host)}")
                new.append(port)
        self._ip_batch(None, create)
        for ifname in new:
            # IPv6 off on our root-namespace links before they go up: not a single RS/DAD packet leaves them.
            path = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
            if path.exists():
                path.write_text("1")
        lines = [f"addr replace {plan.mgmt_bridge_address(self.index)} dev {self.mgmt_bridge}", f"link set {self.mgmt_bridge} up"]
        lines += [f"link set {plan.root_mgmt_port(self.prefix, h)} master {self.mgmt_bridge} up" for h in self.host_plan]
        self._ip_batch(None, lines)

    def _ensure_switch(self) -> None:
        sw = self.netns("sw")
        links = self._links(sw)
        lines: list[str] = []
        for br in (IF.BR_TRANSIT, IF.BR_PUBLIC):
            if br not in links:
                lines.append(f"link add {br} type bridge")
            lines.append(f"link set {br} up")
        ports = [("transit", h, IF.TRANSIT, IF.BR_TRANSIT) for h in self.host_plan]
        ports += [("public", h, IF.PUBLIC, IF.BR_PUBLIC) for h in (*self.host_plan, "inet")]
        for segment, host, inner, bridge in ports:
            port = IF.sw_port(segment, host)
            if port not in links:
                if inner in self._links(self.netns(host)):
                    self._ip_batch(self.netns(host), [f"link del {inner}"])
                lines.append(f"link add {port} type veth peer name {inner} netns {self.netns(host)}")
            lines.append(f"link set {port} master {bridge} up")
        self._ip_batch(sw, lines)

    def _configure_host(self, name: str) -> None:
        h = self.host_plan[name]
        ns = self.netns(name)
        mgmt = IPv4Interface(f"{h.mgmt_address(self.index)}/{plan.mgmt_network(self.index).prefixlen}")
        lines = [
            f"addr replace {mgmt} dev {IF.MGMT}",
            f"addr replace {h.transit_address}/{plan.TRANSIT_NET.prefixlen} dev {IF.TRANSIT}",
            f"addr replace {h.public}/{plan.PUBLIC_NET.prefixlen} dev {IF.PUBLIC}",
            f"link set {IF.MGMT} up",
            f"link set {IF.TRANSIT} up",
            f"link set {IF.PUBLIC} up",
            # Only a connected route on mgmt: the management segment never carries lab traffic.
            f"route replace default via {plan.ROUTER_PUBLIC.ip} dev {IF.PUBLIC}",
        ]
        if h.role == "node":
            if IF.PODS not in self._links(ns):
                lines.insert(0, f"link add {IF.PODS} type bridge")
            lines += [f"addr replace {h.pod_gateway} dev {IF.PODS}", f"link set {IF.PODS} up"]
        self._ip_batch(ns, lines)
        if h.role == "gateway":
            # Gateways forward pod sources arriving over transit: no reverse-path check at all.
            self._sysctl(ns, {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                              **{f"net.ipv4.conf.{i}.rp_filter": 0 for i in (IF.MGMT, IF.TRANSIT, IF.PUBLIC)}})
        else:
            # "Shared egress": pods leave from the node's own public address. Replaces the whole table.
            script = "\n".join([
                f"table ip {NFT_LAB_TABLE} {{}}",
                f"delete table ip {NFT_LAB_TABLE}",
                f"table ip {NFT_LAB_TABLE} {{",
                "  chain postrouting {",
                "    type nat hook postrouting priority srcnat; policy accept;",
                f'    oifname "{IF.PUBLIC}" ip saddr {h.pod_cidr} masquerade',
                "  }",
                "}",
                "",
            ])
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)
        self._configure_host6(name)

    def _configure_internet(self) -> None:
        ns = self.netns("inet")
        lines = []
        if IF.INET not in self._links(ns):
            # No dummy module on every kernel: a veth pair kept inside the namespace carries the addresses.
            lines.append(f"link add {IF.INET} type veth peer name {IF.INET_PEER}")
        lines += [
            f"addr replace {plan.ROUTER_PUBLIC} dev {IF.PUBLIC}",
            f"addr replace {plan.INTERNET_ADDRESS} dev {IF.INET}",
            f"addr replace {plan.ECHO_ADDRESS}/{plan.INTERNET_NET.prefixlen} dev {IF.INET}",
            f"link set {IF.PUBLIC} up",
            f"link set {IF.INET_PEER} up",
            f"link set {IF.INET} up",
        ]
        self._ip_batch(ns, lines)
        # Egress addresses can move between gateways; a short reachable time lets the router's ARP cache
        # follow within a couple of seconds instead of ~30 where no gratuitous ARP told it at once.
        self._sysctl(ns, {f"net.ipv4.neigh.{IF.PUBLIC}.base_reachable_time_ms": 1000,
                          f"net.ipv4.neigh.{IF.PUBLIC}.delay_first_probe_time": 1})
        self._configure_internet6()

    # ---- IPv6 (dual-stack segments; management stays IPv4) ---------------------------------------------

    def _enable_ipv6(self, netns: str, ifnames: list[str], *, forwarding: bool) -> None:
        # Namespaces start with IPv6 off (no chatter on the management link); only these links get it, and
        # forwarding where the host routes. Never touched: anything in the root namespace.
        # In this order: no DAD (addresses, link-local included, usable at once) and no router
        # advertisements taken, then IPv6 on.
        settings: dict[str, str | int] = {}
        for i in ifnames:
            settings |= {f"net.ipv6.conf.{i}.accept_dad": 0, f"net.ipv6.conf.{i}.accept_ra": 0,
                         f"net.ipv6.conf.{i}.disable_ipv6": 0}
        if forwarding:
            settings["net.ipv6.conf.all.forwarding"] = 1
        self._sysctl(netns, settings)

    def _configure_host6(self, name: str) -> None:
        h = self.host_plan[name]
        ns = self.netns(name)
        links = [IF.TRANSIT, IF.PUBLIC] + ([IF.PODS] if h.role == "node" else [])
        # A gateway holds its IPv6 egress pools as local routes through lo (anyIP), as a host whose IPv6
        # is not switched off does; only the lab starts namespaces with IPv6 off everywhere.
        self._enable_ipv6(ns, links + (["lo"] if h.role == "gateway" else []), forwarding=True)
        # nodad: addresses usable at once (the lab owns the whole plan, nothing can duplicate them).
        lines = [
            f"addr replace {h.transit_address6}/64 dev {IF.TRANSIT} nodad",
            f"addr replace {h.public6}/64 dev {IF.PUBLIC} nodad",
            f"route replace default via {plan.ROUTER_PUBLIC6.ip} dev {IF.PUBLIC}",
        ]
        if h.role == "node":
            lines.insert(0, f"addr replace {h.pod_gateway6} dev {IF.PODS} nodad")
        self._ip_batch(ns, lines)
        if h.role == "node":
            # The node's shared IPv6 egress: pods leave from the node's own public IPv6 address.
            script = "\n".join([
                f"table ip6 {NFT_LAB_TABLE} {{}}",
                f"delete table ip6 {NFT_LAB_TABLE}",
                f"table ip6 {NFT_LAB_TABLE} {{",
                "  chain postrouting {",
                "    type nat hook postrouting priority srcnat; policy accept;",
                f'    oifname "{IF.PUBLIC}" ip6 saddr {h.pod_cidr6} masquerade',
                "  }",
                "}",
                "",
            ])
            _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script)

    def _configure_internet6(self) -> None:
        ns = self.netns("inet")
        self._enable_ipv6(ns, [IF.PUBLIC, IF.INET], forwarding=True)
        self._ip_batch(ns, [
            f"addr replace {plan.ROUTER_PUBLIC6} dev {IF.PUBLIC} nodad",
            f"addr replace {plan.INTERNET_ADDRESS6} dev {IF.INET} nodad",
            f"addr replace {plan.ECHO_ADDRESS6}/{plan.INTERNET_NET6.prefixlen} dev {IF.INET} nodad",
        ])
        # As for IPv4: egress /128s move between gateways; the router's neighbour cache follows quickly.
        self._sysctl(ns, {f"net.ipv6.neigh.{IF.PUBLIC}.base_reachable_time_ms": 1000,
                          f"net.ipv6.neigh.{IF.PUBLIC}.delay_first_probe_time": 1})

    def _build_app6(self, app: LabApp) -> None:
        gateway6 = self.host_plan[app.node].pod_gateway6
        if gateway6 is None:
            raise LabError(f"{app.node} has no IPv6 pod subnet")
        # The node's end of the veth is a bridge port (layer 2): IPv6 stays off there.
        self._enable_ipv6(app.netns, [IF.APP], forwarding=False)
        self._ip_batch(app.netns, [
            f"addr add {app.address6}/{gateway6.network.prefixlen} dev {IF.APP} nodad",
            f"route replace default via {gateway6.ip} dev {IF.APP}",
        ])

    # ---- sshd ----------------------------------------------------------------------------------------------

    def _write_sshd_config(self, host: str) -> Path:
        conf = self._sshd_config_path(host)
        conf.write_text(self._sshd_config_text(host))
        return conf

    def _sshd_config_text(self, host: str) -> str:
        h = self.host_plan[host]
        return "\n".join([
            f"# lab {self.prefix}: sshd of {host}, started in namespace {self.netns(host)}",
            f"ListenAddress {h.mgmt_address(self.index)}",
            "Port 22",
            f"HostKey {self._host_key_path(host)}",
            f"PidFile {self._sshd_pidfile(host)}",
            f"AuthorizedKeysFile {self.state_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            # The product opens many sessions in parallel (benchmarks: hundreds of handshakes at once).
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            # VERBOSE logs one line per session ("Starting session: ..."): remote_commands().
            "LogLevel VERBOSE",
            # Every command goes through the lab's login wrapper, which delays it by the configured
            # per-command cost (see set_command_cost).
            f"ForceCommand {self._command_wrapper}",
            "",
        ])

    # ---- the cost of a remote command -----------------------------------------------------------------------

    @property
    def _command_wrapper(self) -> Path:
        return self.state_dir / "command_wrapper.sh"

    @property
    def _command_cost_file(self) -> Path:
        return self.state_dir / "command_cost_ms"

    def _write_command_wrapper(self) -> None:
        # sshd runs the wrapper (ForceCommand) with the client's command in SSH_ORIGINAL_COMMAND. It waits the
        # configured cost and then runs the command with a POSIX shell, stdin and exit status untouched.
        self._command_wrapper.write_text(
            "#!/bin/sh\n"
            f"# lab {self.prefix}: every remote command costs what command_cost_ms says\n"
            f'ms=$(cat "{self._command_cost_file}" 2>/dev/null || echo 0)\n'
            'case "$ms" in ""|*[!0-9]*) ms=0 ;; esac\n'
            'if [ "$ms" -gt 0 ]; then sleep "$(printf \'%d.%03d\' $((ms / 1000)) $((ms % 1000)))"; fi\n'
            'if [ -z "${SSH_ORIGINAL_COMMAND:-}" ]; then exec /bin/sh -l; fi\n'
            'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
        )
        self._command_wrapper.chmod(0o755)

    def set_command_cost(self, ms: int) -> None:
        """Make every remote command on every lab host wait ``ms`` milliseconds before it runs, as a round
        trip to a host in another zone would (0: no added cost). Takes effect for the next command."""
        if not isinstance(ms, int) or ms < 0:
            raise LabError(f"a command cost is a whole number of milliseconds >= 0, not {ms!r}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._command_cost_file.with_suffix(".tmp")
        tmp.write_text(f"{ms}\n")
        tmp.replace(self._command_cost_file)

    @property
    def command_cost(self) -> int:
        try:
            return int(self._command_cost_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def command_counts(self) -> dict[str, int]:
        """Remote commands each host has run since this object's last reset_command_counts (remote_commands)."""
        return {name: self.remote_commands(name) - self._command_base.get(name, 0) for name in self.host_plan}

    def reset_command_counts(self) -> None:
        self._command_base = {name: self.remote_commands(name) for name in self.host_plan}

    def sshd_alive(self, host: str) -> bool:
        return self._pid_in_netns(_read_pid(self._sshd_pidfile(host)), self.netns(host))

    def _ensure_sshd(self, host: str) -> None:
        if self.sshd_alive(host):
            with contextlib.suppress(OSError):
                if self._sshd_config_path(host).read_text() == self._sshd_config_text(host):
                    return
            # Started by an older version of the lab: restarted below with today's configuration.
        # An sshd we lost track of (pidfile gone) would still hold port 22: nothing else lives in a host
        # namespace but sshd and its sessions.
        _kill(self._netns_pids(self.netns(host)))
        conf = self._write_sshd_config(host)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self._sshd_pidfile(host).unlink(missing_ok=True)
        # sshd daemonizes once it listens: the launcher exits and nothing is left for us to reap.
        log = str(self.sshd_log(host))
        argv = ["ip", "netns", "exec", self.netns(host), SSHD, "-f", str(conf), "-E", log]
        bashrc = Path(pwd.getpwnam("root").pw_dir) / ".bashrc"
        if bashrc.is_file():
            # A real gateway's root has no interactive shell set-up; this machine's may (pyenv costs
            # ~0.2 s per command, since bash reads ~/.bashrc for every ssh command). Give the lab's sshd
            # and its sessions a private mount namespace where that file is empty.
            empty = self.config.state_dir / "empty_bashrc"
            empty.write_text("")
            argv = [
                "ip", "netns", "exec", self.netns(host), "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", 'mount --bind "$1" "$2" && exec "$3" -f "$4" -E "$5"', "sh",
                str(empty), str(bashrc), SSHD, str(conf), log,
            ]
        _run(argv, timeout=15)

    def _wait_sshd(self, hosts: list[str], timeout: float = 10) -> None:
        pending = {h: self.hosts[h].mgmt_address for h in hosts}
        deadline = time.monotonic() + timeout
        while pending:
            pending = {h: a for h, a in pending.items() if not _banner(a)}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"sshd did not answer on {', '.join(f'{h} ({a}:22)' for h, a in pending.items())}")
            time.sleep(0.05)

    def start_sshd(self, host: str) -> None:
        """Start a host's sshd (no-op when it runs) and wait until it answers."""
        self.netns(host)
        if host not in self.host_plan:
            raise LabError(f"{host} has no sshd")
        self._ensure_sshd(host)
        self._wait_sshd([host])

    def stop_sshd(self, host: str) -> None:
        """Kill a host's sshd and its open sessions: to the workers the host is unreachable, also over an
        SSH connection they had cached.

        The listener goes first. Killed all at once, a client whose session died first could reconnect
        to the listener in between, and the child it forked (not on the list) kept serving it: the host
        then still answered over SSH (the prober's re-opened session did)."""
        if host not in self.host_plan:
            raise LabError(f"{host} has no sshd")
        netns = self.netns(host)
        listener = _read_pid(self._sshd_pidfile(host))
        if listener is not None and self._pid_in_netns(listener, netns):
            _kill({listener})
        for _ in range(5):  # a child forked before the listener died is caught by the next round
            pids = self._netns_pids(netns)
            if not pids:
                break
            _kill(pids)
        self._sshd_pidfile(host).unlink(missing_ok=True)

    def regenerate_host_key(self, host: str) -> str:
        """Give a host a new host key (restarting its sshd) and return the new public key line."""
        if host not in self.host_plan:
            raise LabError(f"{host} has no sshd")
        self.stop_sshd(host)
        self._new_host_key(host)
        self.start_sshd(host)
        return self.host_key(host)

    # ---- echo server ---------------------------------------------------------------------------------------

    def echo_alive(self) -> bool:
        return self._pid_in_netns(_read_pid(self._echo_pidfile), self.netns("inet"))

    def _echo_serves_ipv6(self) -> bool:
        try:
            return str(plan.ECHO_ADDRESS6).encode() in Path(f"/proc/{_read_pid(self._echo_pidfile)}/cmdline").read_bytes()
        except OSError:
            return False

    def _ensure_echo(self) -> None:
        if self.echo_alive() and self._echo_serves_ipv6():  # one started by an IPv4-only lab is replaced
            return
        _kill(self._netns_pids(self.netns("inet")))  # an echo server we lost track of still holds port 80
        self._echo_pidfile.unlink(missing_ok=True)
        argv = [
            sys.executable, str(ECHO_SCRIPT), "--bind", str(plan.ECHO_ADDRESS), "--bind", str(plan.ECHO_ADDRESS6),
            "--port", str(plan.ECHO_PORT),
            "--pidfile", str(self._echo_pidfile), "--daemon",
        ]
        self.host_exec("inet", argv, timeout=15)

    # ---- apps ----------------------------------------------------------------------------------------------

    def add_app(self, name: str, node: str) -> LabApp:
        """An app instance on ``node``: a namespace on the node's pod bridge, in a fresh /28 of its pod /24.
        Adding an existing app on another node moves it (the old instance goes); on the same node it is kept."""
        plan.check_app_name(name)
        if self.host_plan.get(node) is None or self.host_plan[node].role != "node":
            nodes = ", ".join(h for h, p in self.host_plan.items() if p.role == "node")
            raise LabError(f"{node!r} is not a lab node; nodes are {nodes}")
        with self._locked():
            state = self._load_state()
            apps = state.setdefault("apps", {})
            current = apps.get(name)
            if current and current["node"] == node:
                app = LabApp(**current)
                if self._ns_inode(app.netns) is None or self.app_port_missing(app):
                    self._build_app(app)
                return app
            if current:
                self._destroy_app(LabApp(**current))
                del apps[name]
            app = self._new_app(name, node, apps)
            apps[name] = asdict(app)
            self._save_state(state)
            self._build_app(app)
            return app

    def _new_app(self, name: str, node: str, apps: dict[str, Any]) -> LabApp:
        pods, gateway = self.host_plan[node].pod_cidr, self.host_plan[node].pod_gateway
        if pods is None or gateway is None:
            raise LabError(f"{node} has no pod subnet")
        taken = {a["slot"] for a in apps.values() if a["node"] == node}
        for slot, net in enumerate(pods.subnets(new_prefix=plan.POD_APP_PREFIXLEN)):
            if gateway.ip in net or slot in taken:  # the /28 holding the bridge's .1
                continue
            return LabApp(name=name, node=node, netns=plan.app_netns(self.prefix, name),
                          address=str(net.network_address + 1), cidr=str(net), slot=slot)
        raise LabError(f"{node} has no free /28 left in {pods} for app {name}")

    def app_port_missing(self, app: LabApp) -> bool:
        return IF.app_port(app.slot) not in self._links(self.netns(app.node))

    def _build_app(self, app: LabApp) -> None:
        self._destroy_app(app)  # whatever half is left of an earlier instance
        node_ns = self.netns(app.node)
        pods = self.host_plan[app.node].pod_gateway
        if pods is None:
            raise LabError(f"{app.node} has no pod subnet")
        self._ip_batch(None, [f"netns add {app.netns}"])
        self._init_netns(app.netns)
        port = IF.app_port(app.slot)
        self._ip_batch(node_ns, [
            f"link add {port} type veth peer name {IF.APP} netns {app.netns}",
            f"link set {port} master {IF.PODS} up",
        ])
        self._ip_batch(app.netns, [
            # A /24 on the interface: the pod bridge's .1 is on-link from every /28.
            f"addr add {app.address}/{pods.network.prefixlen} dev {IF.APP}",
            f"link set {IF.APP} up",
            f"route replace default via {pods.ip} dev {IF.APP}",
        ])
        self._build_app6(app)

    def _destroy_app(self, app: LabApp) -> None:
        node_ns = self.netns(app.node)
        if self._ns_inode(node_ns) is not None and IF.app_port(app.slot) in self._links(node_ns):
            # Deleting the node's end removes the pair now; a dying namespace would free it only later,
            # and the next instance on this slot needs the name.
            self._ip_batch(node_ns, [f"link del {IF.app_port(app.slot)}"])
        if self._ns_inode(app.netns) is not None:
            _kill(self._netns_pids(app.netns))
            _run(["ip", "netns", "del", app.netns])

    def rebuild_app(self, name: str) -> LabApp:
        """Recreate an app instance from scratch on the same node, slot and address (fresh namespace
        and veth): a clean start for tests, whatever earlier ones did to it."""
        with self._locked():
            current = self._load_state().get("apps", {}).get(name)
            if current is None:
                raise LabError(f"no lab app named {name!r}")
            app = LabApp(**current)
            self._build_app(app)
            return app

    def remove_app(self, name: str) -> None:
        with self._locked():
            state = self._load_state()
            current = state.get("apps", {}).pop(name, None)
            if current is None:
                # Not in the state file, maybe left by a crash: remove its namespace by name.
                netns = plan.app_netns(self.prefix, plan.check_app_name(name))
                if self._ns_inode(netns) is not None:
                    _kill(self._netns_pids(netns))
                    _run(["ip", "netns", "del", netns])
                return
            self._destroy_app(LabApp(**current))
            self._save_state(state)

    def seen_ip6(self, app: str, timeout: float = 3.0, retries: int = 2) -> str:
        """seen_ip over IPv6: the source address the echo server sees for the app's IPv6 traffic."""
        return self.seen_ip(app, timeout, retries, family=6)

    def seen_ip(self, app: str, timeout: float = 3.0, retries: int = 2, family: int = 4) -> str:
        """What the internet sees: curl from the app's namespace to the echo server, return the address.

        A lost request is tried again (``retries`` times): right after a test moved addresses around,
        the lab's router may hold a neighbour entry for an egress /32 that just changed gateway (no
        gratuitous ARP on address add) for a moment. An answer is never retried: the address seen is
        whatever the first answer says."""
        for attempt in range(retries + 1):
            try:
                return self._seen_ip_once(app, timeout, family)
            except LabError:
                if attempt == retries:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def _seen_ip_once(self, app: str, timeout: float, family: int = 4) -> str:
        current = self.apps.get(app)
        if current is None:
            raise LabError(f"no lab app named {app!r} (apps: {', '.join(self.apps) or 'none'})")
        argv = [
            "ip", "netns", "exec", current.netns,
            "curl", "-sS", "--noproxy", "*", "--connect-timeout", f"{timeout:.2f}", "--max-time", f"{timeout:.2f}",
            self.echo_url if family == 4 else self.echo_url6,
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5, env=_no_proxy_env(), check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"app {app}: no answer from the echo server within {timeout:.1f}s") from None
        if proc.returncode != 0:
            raise LabError(
                f"app {app} ({current.address} on {current.node}) could not reach "
                f"{self.echo_url if family == 4 else self.echo_url6}: "
                f"{proc.stderr.strip() or f'curl exit {proc.returncode}'}"
            )
        seen = proc.stdout.strip()
        try:
            return str(IPv4Address(seen) if family == 4 else IPv6Address(seen))
        except ValueError:
            raise LabError(f"app {app}: unexpected answer from the echo server: {seen[:200]!r}") from None

    # ---- fault injection -----------------------------------------------------------------------------------

    def flush_product_state(self, host: str) -> None:
        """What a reboot does to the product's configuration: its nft tables, its routes (the anyIP pool
        routes too) and rules, and any egress /32s of the old layout are gone. The lab's own configuration
        stays."""
        ns = self.netns(host)
        addresses: set[str] = set()
        for family in ("ip", "arp"):  # the old layout recorded its /32s in the ip table, the new one in arp
            listed = self.host_exec(host, ["nft", "-j", "list", "set", family, PRODUCT_TABLE, "egress_addresses"], check=False)
            if listed.returncode == 0:
                for obj in json.loads(listed.stdout).get("nftables", []):
                    for elem in obj.get("set", {}).get("elem", []):
                        value = elem.get("elem", {}).get("val", elem) if isinstance(elem, dict) else elem
                        if isinstance(value, dict) and "prefix" in value:
                            value = value["prefix"]["addr"]
                        if isinstance(value, str):
                            addresses.add(value)
        for family in ("ip", "arp"):
            self.host_exec(host, ["nft", "delete", "table", family, PRODUCT_TABLE], check=False)
        lines: list[str] = []
        for link in json.loads(self.host_exec(host, ["ip", "-j", "-4", "addr", "show"]).stdout or "[]"):
            for a in link.get("addr_info", []):
                if a.get("local") in addresses and a.get("prefixlen") == 32:
                    lines.append(f"addr del {a['local']}/32 dev {link['ifname']}")
        routes = json.loads(self.host_exec(host, ["ip", "-N", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
        for r in routes:
            table = int(r.get("table", 254)) if str(r.get("table", "254")).isdigit() else 254
            if str(r.get("protocol")) == str(PRODUCT_RT_PROTO) and str(r.get("type")) in ("local", "2"):
                lines.append(f"route del local {r['dst']} table {table}")  # an anyIP pool route
                continue
            if str(r.get("protocol")) == str(PRODUCT_RT_PROTO) or table in PRODUCT_TABLES:
                if r.get("type", "unicast") not in ("unicast", "blackhole", "unreachable", "prohibit"):
                    continue  # local/broadcast entries follow addresses
                kind = "" if r.get("type", "unicast") == "unicast" else f"{r['type']} "
                lines.append(f"route del {kind}{r['dst']} table {table}")
        for rule in json.loads(self.host_exec(host, ["ip", "-N", "-j", "-4", "rule", "show"]).stdout or "[]"):
            if str(rule.get("protocol")) == str(PRODUCT_RT_PROTO):
                lines.append(f"rule del priority {rule['priority']}")
        # -force: a route may vanish with an address deleted just before it; keep going.
        if lines:
            _run(["ip", "-n", ns, "-force", "-batch", "-"], input="\n".join(lines) + "\n", check=False)
        self._flush_product_state6(host)

    def _flush_product_state6(self, host: str) -> None:
        # The IPv6 half of flush_product_state: table ip6, the /128s it recorded, IPv6 routes (the anyIP pool
        # routes too), proxy NDP entries and rules.
        listed = self.host_exec(host, ["nft", "-j", "list", "set", "ip6", PRODUCT_TABLE, "egress_addresses"], check=False)
        addresses: set[str] = set()
        if listed.returncode == 0:
            for obj in json.loads(listed.stdout).get("nftables", []):
                addresses |= {e for e in obj.get("set", {}).get("elem", []) if isinstance(e, str)}
        self.host_exec(host, ["nft", "delete", "table", "ip6", PRODUCT_TABLE], check=False)
        lines: list[str] = []
        for link in json.loads(self.host_exec(host, ["ip", "-j", "-6", "addr", "show"]).stdout or "[]"):
            for a in link.get("addr_info", []):
                if a.get("local") in addresses and a.get("prefixlen") == 128:
                    lines.append(f"addr del {a['local']}/128 dev {link['ifname']}")
        for r in json.loads(self.host_exec(host, ["ip", "-N", "-j", "-6", "route", "show", "table", "all"]).stdout or "[]"):
            table = int(r.get("table", 254)) if str(r.get("table", "254")).isdigit() else 254
            if str(r.get("protocol")) == str(PRODUCT_RT_PROTO) and str(r.get("type")) in ("local", "2"):
                lines.append(f"route del local {r['dst']} table {table}")  # an anyIP pool route
            elif (str(r.get("protocol")) == str(PRODUCT_RT_PROTO) or table in PRODUCT_TABLES) and r.get(
                "type", "unicast"
            ) == "unicast":
                lines.append(f"route del {r['dst']} table {table}")
        # The anyIP addresses' proxy NDP entries (tagged with the product's protocol), and the sysctls a
        # reboot resets.
        for e in json.loads(self.host_exec(host, ["ip", "-N", "-j", "-6", "neigh", "show", "proxy"]).stdout or "[]"):
            if str(e.get("protocol")) == str(PRODUCT_RT_PROTO) and e.get("dev"):
                lines.append(f"neigh del proxy {e['dst']} dev {e['dev']}")
        if self.host_plan.get(host) is not None and self.host_plan[host].role == "gateway":
            self._sysctl(self.netns(host), {f"net.ipv6.conf.{IF.PUBLIC}.proxy_ndp": 0,
                                            f"net.ipv6.neigh.{IF.PUBLIC}.proxy_delay": 80})
        for rule in json.loads(self.host_exec(host, ["ip", "-N", "-j", "-6", "rule", "show"]).stdout or "[]"):
            if str(rule.get("protocol")) == str(PRODUCT_RT_PROTO):
                lines.append(f"rule del priority {rule['priority']}")
        if lines:
            _run(["ip", "-n", self.netns(host), "-6", "-force", "-batch", "-"], input="\n".join(lines) + "\n", check=False)

    def _gateway_cut_ports(self, host: str) -> list[str]:
        if self.host_plan.get(host) is None or self.host_plan[host].role != "gateway":
            raise LabError(f"{host!r} is not a lab gateway")
        return [IF.sw_port("transit", host), IF.sw_port("public", host)]

    def cut_gateway(self, host: str) -> None:
        """The gateway dies for traffic: its switch ports go down (transit and public). Its own links,
        addresses and routes stay as they are, like a host whose cables were pulled; mgmt stays up."""
        self._ip_batch(self.netns("sw"), [f"link set {p} down" for p in self._gateway_cut_ports(host)])

    def restore_gateway(self, host: str) -> None:
        self._ip_batch(self.netns("sw"), [f"link set {p} up" for p in self._gateway_cut_ports(host)])

    def power_off(self, host: str) -> None:
        """A power loss: every link of the host goes dark at once, management included. Nothing answers,
        nothing is refused (no RST, no ICMP): a prober sees only silence."""
        if host not in self.host_plan:
            raise LabError(f"{host!r} is not a lab host")
        ports = [IF.sw_port("transit", host), IF.sw_port("public", host)]
        self._ip_batch(None, [f"link set {plan.root_mgmt_port(self.prefix, host)} down"])
        self._ip_batch(self.netns("sw"), [f"link set {p} down" for p in ports])

    def power_on(self, host: str, *, empty: bool = True) -> None:
        """The host comes back. ``empty``: as after a reboot, the product's rules, addresses and routes are
        gone and its SSH sessions with them (sshd restarts); the links come up last."""
        if host not in self.host_plan:
            raise LabError(f"{host!r} is not a lab host")
        if empty:
            self.stop_sshd(host)
            self.flush_product_state(host)
            self._ensure_sshd(host)
        self._ip_batch(self.netns("sw"), [f"link set {IF.sw_port(s, host)} up" for s in ("transit", "public")])
        self._ip_batch(None, [f"link set {plan.root_mgmt_port(self.prefix, host)} up"])

    def pause(self, host: str, seconds: float) -> None:
        """Every process of the host (sshd and its sessions) stops for a moment: a probe answered late."""
        pids = self._netns_pids(self.netns(host))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    # ---- status and down -----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        existing = self._list_netns()
        hosts: dict[str, Any] = {}
        for name, h in self.hosts.items():
            hosts[name] = {
                "netns": h.netns in existing,
                "sshd": h.netns in existing and self.sshd_alive(name),
                "reachable": _banner(h.mgmt_address),
                "mgmt_address": h.mgmt_address,
            }
        inet = self.netns("inet")
        apps = {name: {"node": a.node, "cidr": a.cidr, "netns": a.netns in existing} for name, a in self.apps.items()}
        return {
            "prefix": self.prefix,
            "index": self.index,
            "hosts": hosts,
            "internet": {"netns": inet in existing, "echo": inet in existing and self.echo_alive(), "echo_url": self.echo_url},
            "switch": {"netns": self.netns("sw") in existing},
            "apps": apps,
            "healthy": all(v["sshd"] and v["reachable"] for v in hosts.values())
            and inet in existing
            and self.echo_alive()
            and all(a["netns"] for a in apps.values()),
        }

    def down(self) -> None:
        """Remove everything carrying the prefix: processes, namespaces, root-namespace links, state."""
        started = time.monotonic()
        with self._locked():
            namespaces = self._our_netns()
            pids: set[int] = set()
            for ns in namespaces:
                pids |= self._netns_pids(ns)
            pids |= self._processes_using_state_dir()
            if pids:
                self.log(f"stopping {len(pids)} process(es)")
                _kill(pids)
            if namespaces:
                self.log(f"deleting {len(namespaces)} namespace(s)")
                self._ip_batch(None, [f"netns del {ns}" for ns in sorted(namespaces)])
            links = sorted(link for link in self._links(None) if link.startswith(f"{self.prefix}-"))
            if links:
                self.log(f"deleting root-namespace link(s) {', '.join(links)}")
                # A veth end may disappear with its namespace between the listing and the deletion.
                _run(["ip", "-force", "-batch", "-"], input="".join(f"link del {link}\n" for link in links), check=False)
            if self.state_dir.exists():
                self.log(f"removing {self.state_dir}")
                shutil.rmtree(self.state_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._lock_file.unlink()
        leftovers = self.leftovers()
        if leftovers:
            raise LabError(f"lab {self.prefix}: could not remove {', '.join(leftovers)}")
        self.log(f"lab {self.prefix} is down ({time.monotonic() - started:.1f}s)")

    def _processes_using_state_dir(self) -> set[int]:
        # sshd and the echo server carry state_dir in their command line: found even if their namespace
        # name is already gone (a crash in the middle of an earlier down).
        # Only sshd and the echo server: an editor or a `tail` of a file in state_dir is not ours to kill.
        marker = str(self.state_dir).encode() + b"/"
        found: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ours = argv[0].endswith(b"sshd") or any(a.endswith(b"/lab/echo.py") for a in argv)
            if ours and any(marker in a for a in argv):
                found.add(int(entry.name))
        return found

    def leftovers(self) -> list[str]:
        """Anything of this lab still present (empty after a clean down)."""
        found = [f"netns {ns}" for ns in sorted(self._our_netns())]
        found += [f"link {link}" for link in sorted(self._links(None)) if link.startswith(f"{self.prefix}-")]
        found += [f"process {pid}" for pid in sorted(self._processes_using_state_dir()) if _pid_alive(pid)]
        if self.state_dir.exists():
            found.append(f"directory {self.state_dir}")
        return found
