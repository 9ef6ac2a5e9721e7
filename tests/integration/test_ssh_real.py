"""workers.ssh against a real OpenSSH server on 127.0.0.1 (root + /usr/sbin/sshd, else skipped)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from workers.ssh import (
    CommandFailed,
    HostKeyMismatch,
    HostTarget,
    SSHError,
    SSHSession,
    close_all_sessions,
    get_session,
)

SSHD = "/usr/sbin/sshd"
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SSHD) or not shutil.which("ssh-keygen"),
    reason="needs root, /usr/sbin/sshd and ssh-keygen",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.host_key = root / "host_ed25519"
        self.client_key = root / "client_ed25519"
        for path in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
        self.config = root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {root}/authorized_keys\nPidFile {root}/sshd.pid\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin yes\nPubkeyAuthentication yes\nLogLevel ERROR\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)], stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def _descendants(self, pid: int) -> list[int]:
        found = []
        try:
            tasks = list(Path(f"/proc/{pid}/task").glob("*"))
        except OSError:  # the process exited while we looked (ESRCH from /proc)
            return found
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                found += [child, *self._descendants(child)]
        return found

    def stop(self) -> None:
        """Stop the listener and its per-connection children (they call setsid, so not via the group)."""
        if self.proc is None:
            return
        for pid in [*self._descendants(self.proc.pid), self.proc.pid]:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        self.proc = None

    def target(self, host_key: str | None = None) -> HostTarget:
        line = host_key or (self.root / "host_ed25519.pub").read_text().strip()
        return HostTarget("127.0.0.1", self.port, "root", line)

    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.client_key))


@pytest.fixture()
def sshd(tmp_path):
    server = Sshd(tmp_path)
    server.start()
    try:
        yield server
    finally:
        close_all_sessions()
        server.stop()


def test_run_returns_output(sshd):
    with SSHSession(sshd.target(), pkey=sshd.pkey()) as s:
        result = s.run(["echo", "hello world", "$(id)"])
        assert result.stdout == "hello world $(id)\n"  # argv is quoted, never shell-interpolated
        assert result.exit_status == 0 and result.duration > 0


def test_close_all_sessions_closes_pooled_connections(sshd):
    close_all_sessions()
    key = sshd.pkey()  # one key object: the pool is keyed by it
    pooled = get_session(sshd.target(), pkey=key)
    assert get_session(sshd.target(), pkey=key) is pooled
    assert pooled.run(["true"]).exit_status == 0
    assert pooled.connected
    close_all_sessions()
    assert not pooled.connected  # the connection is gone, not merely forgotten
    fresh = get_session(sshd.target(), pkey=key)
    assert fresh is not pooled and not fresh.connected
    assert fresh.run(["echo", "again"]).stdout == "again\n"


def test_large_output_does_not_deadlock(sshd):
    with SSHSession(sshd.target(), pkey=sshd.pkey(), command_timeout=60) as s:
        result = s.run(["sh", "-c", "head -c 5000000 /dev/zero | base64; echo done >&2"])
        assert len(result.stdout.replace("\n", "")) == 6666668
        assert result.stderr == "done\n"


def test_stdin_is_delivered(sshd):
    data = "x" * 3_000_000 + "\nend\n"  # larger than the channel window, while cat echoes it back
    with SSHSession(sshd.target(), pkey=sshd.pkey(), command_timeout=60) as s:
        assert s.run(["cat"], stdin=data).stdout == data
        assert s.run(["wc", "-c"], stdin=b"abc").stdout.strip() == "3"
        assert s.run(["cat"]).stdout == ""  # no stdin: EOF right away, no hang


def test_nonzero_exit_raises_command_failed(sshd):
    with SSHSession(sshd.target(), pkey=sshd.pkey()) as s:
        with pytest.raises(CommandFailed) as info:
            s.run(["sh", "-c", "echo boom >&2; exit 3"])
        assert info.value.exit_status == 3 and "boom" in info.value.stderr and info.value.kind == "command_failed"
        assert s.run(["false"], check=False).exit_status == 1


def test_wrong_pinned_key_never_runs_the_command(sshd, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    marker = tmp_path / "marker"
    s = SSHSession(sshd.target((tmp_path / "other.pub").read_text()), pkey=sshd.pkey())
    with pytest.raises(HostKeyMismatch) as info:
        s.run(["touch", str(marker)])
    assert info.value.kind == "host_key_mismatch"
    assert info.value.expected.startswith("SHA256:") and info.value.actual.startswith("SHA256:")
    assert info.value.expected != info.value.actual
    assert not marker.exists()


def test_pinned_key_of_another_type_is_a_mismatch(sshd, tmp_path):
    other = tmp_path / "rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(other)], check=True)
    marker = tmp_path / "marker"
    s = SSHSession(sshd.target((tmp_path / "rsa.pub").read_text()), pkey=sshd.pkey())
    with pytest.raises(HostKeyMismatch):
        s.run(["touch", str(marker)])
    assert not marker.exists()


def test_wrong_client_key_is_auth_error(sshd):
    with pytest.raises(SSHError) as info:
        SSHSession(sshd.target(), pkey=paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate")
                   else paramiko.RSAKey.generate(2048)).run(["true"])  # fmt: skip
    assert info.value.kind == "auth"


def test_command_timeout(sshd):
    with SSHSession(sshd.target(), pkey=sshd.pkey()) as s:
        started = time.monotonic()
        with pytest.raises(SSHError) as info:
            s.run(["sleep", "30"], timeout=1)
        assert info.value.kind == "timeout"
        assert time.monotonic() - started < 5
        assert s.run(["echo", "still usable"]).stdout == "still usable\n"


def test_pooled_session_is_reused_and_reconnects(sshd):
    target = sshd.target()
    s1 = get_session(target, pkey=(pkey := sshd.pkey()))
    pid1 = s1.run(["sh", "-c", "echo $PPID"]).stdout
    s2 = get_session(target, pkey=pkey)
    assert s2 is s1
    assert s2.run(["sh", "-c", "echo $PPID"]).stdout == pid1  # same connection, same sshd child
    sshd.stop()
    sshd.start()
    s3 = get_session(target, pkey=pkey)
    assert s3 is s1
    assert s3.run(["sh", "-c", "echo $PPID"]).stdout != pid1
