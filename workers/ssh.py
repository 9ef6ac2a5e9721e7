"""The one SSH session class: pinned host keys, bounded waits, argv-only commands, a per-process pool."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paramiko

from egressportal.dataplane.hostkeys import fingerprint, openssh_line, parse_host_key

__all__ = [
    "CommandFailed",
    "CommandResult",
    "HostKeyMismatch",
    "HostTarget",
    "SSHError",
    "SSHSession",
    "close_all_sessions",
    "fingerprint",
    "get_session",
    "openssh_line",
    "parse_host_key",
]

log = logging.getLogger("workers.ssh")

KEEPALIVE_SECONDS = 15
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # protects the worker's memory from a runaway remote command
STDERR_KEEP = 4000
_CHUNK = 32768


class SSHError(Exception):
    """Base error; ``kind`` is one of unreachable, auth, host_key_mismatch, timeout, command_failed,
    protocol (what a task needs to decide whether to retry and what to tell the user)."""

    def __init__(self, message: str, *, kind: str = "protocol") -> None:
        super().__init__(message)
        self.kind = kind


class HostKeyMismatch(SSHError):
    """``expected``/``actual`` are fingerprints; ``actual_key`` is the presented key as an OpenSSH line, so staff
    can pin exactly what was presented after verifying it out of band."""

    def __init__(self, address: str, port: int, expected: str, actual: str | None, actual_key: str = "") -> None:
        super().__init__(
            f"host key of {address}:{port} does not match the pinned key "
            f"(expected {expected}, got {actual or 'a key of another type'})",
            kind="host_key_mismatch",
        )
        self.expected = expected
        self.actual = actual
        self.actual_key = actual_key


class CommandFailed(SSHError):
    def __init__(self, argv: Sequence[str], exit_status: int, stderr: str, stdout: str = "") -> None:
        self.argv = list(argv)
        self.exit_status = exit_status
        self.stderr = _truncate(stderr)
        self.stdout = _truncate(stdout)
        super().__init__(
            f"{shlex.join(self.argv)} exited {exit_status}: {self.stderr.strip()[:500]}",
            kind="command_failed",
        )


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str
    duration: float


@dataclass(frozen=True)
class HostTarget:
    address: str
    port: int
    username: str
    host_key: str  # OpenSSH public key line: "ssh-ed25519 AAAA... [comment]"
    use_sudo: bool = False


def _truncate(text: str, limit: int = STDERR_KEEP) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"


def _known_host_names(target: HostTarget) -> list[str]:
    if target.port == 22:
        return [target.address]
    return [f"[{target.address}]:{target.port}"]


class SSHSession:
    """One authenticated connection to one host; ``run`` may be called many times (and from threads)."""

    def __init__(
        self,
        target: HostTarget,
        *,
        pkey: paramiko.PKey | None = None,
        key_filename: str | None = None,
        connect_timeout: float = 5,
        command_timeout: float = 30,
    ) -> None:
        self.target = target
        self._pinned = parse_host_key(target.host_key)
        self._pkey = pkey
        self._key_filename = key_filename
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        t = self.target
        return f"<SSHSession {t.username}@{t.address}:{t.port}>"

    # -- connection ------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def connect(self) -> None:
        with self._lock:
            if self.connected:
                return
            self._close_client()
            self._client = self._open_client()

    def _open_client(self) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        # Only the pinned key, in memory: never the system's or the user's known_hosts.
        for name in _known_host_names(t):
            client.get_host_keys().add(name, self._pinned.get_name(), self._pinned)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        started = time.monotonic()
        try:
            client.connect(
                hostname=t.address,
                port=t.port,
                username=t.username,
                pkey=self._pkey,
                key_filename=self._key_filename,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                channel_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                t.address, t.port, fingerprint(exc.expected_key), fingerprint(exc.key), openssh_line(exc.key)
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SSHError(f"authentication as {t.username}@{t.address}:{t.port} failed: {exc}", kind="auth") from None
        except paramiko.SSHException as exc:
            # RejectPolicy: the server offered a key type we have no pin for.
            if "not found in known_hosts" in str(exc):
                transport = client.get_transport()
                remote = transport.get_remote_server_key() if transport else None
                client.close()
                raise HostKeyMismatch(
                    t.address,
                    t.port,
                    fingerprint(self._pinned),
                    fingerprint(remote) if remote else None,
                    openssh_line(remote) if remote else "",
                ) from None
            client.close()
            kind = "timeout" if isinstance(exc.__cause__ or exc.__context__, TimeoutError) else "protocol"
            raise SSHError(f"SSH to {t.address}:{t.port} failed: {exc}", kind=kind) from None
        except TimeoutError as exc:
            client.close()
            raise SSHError(f"connecting to {t.address}:{t.port} timed out: {exc}", kind="timeout") from None
        except (OSError, EOFError) as exc:  # refused, no route, DNS, reset during handshake
            client.close()
            raise SSHError(f"{t.address}:{t.port} unreachable: {exc}", kind="unreachable") from None
        transport = client.get_transport()
        if transport is None:  # connect() returned without a transport: not something paramiko does
            raise SSHError(f"SSH to {t.address}:{t.port}: no transport", kind="protocol")
        transport.set_keepalive(KEEPALIVE_SECONDS)
        # Each command opens a channel: small request/reply packets that Nagle's
        # algorithm would hold back for a delayed ACK (~40 ms per command).
        with contextlib.suppress(OSError, AttributeError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("ssh connected %s@%s:%d in %.2fs", t.username, t.address, t.port, time.monotonic() - started)
        return client

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._close_client()

    def __enter__(self) -> SSHSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open_channel(self) -> paramiko.Channel:
        # A transport can look alive until we use it (peer restarted): a failed channel open means the
        # command never started, so one reconnect and retry is safe.
        for attempt in (1, 2):
            self.connect()
            transport = self._client.get_transport() if self._client else None
            try:
                if transport is None:
                    raise paramiko.SSHException("no transport")
                return transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                log.info("ssh %r: channel open failed (%s), reconnecting", self, exc)
                self.close()
                if attempt == 2:
                    msg = f"cannot open a channel to {self.target.address}: {exc}"
                    raise SSHError(msg, kind="unreachable") from None
        raise AssertionError("unreachable")

    def open_stream(self, argv: Sequence[str]) -> paramiko.Channel:
        """Start argv on the host and hand back its channel, for a long-lived exchange (the prober's echo
        channel); the caller reads, writes and closes it."""
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty sequence of str")
        chan = self._open_channel()
        try:
            chan.exec_command(shlex.join(list(argv)))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            chan.close()
            raise SSHError(f"{shlex.join(list(argv))}: connection lost: {exc}", kind="unreachable") from None
        return chan

    # -- commands --------------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run argv on the host (never through a string the caller built) and wait for it, bounded."""
        if isinstance(argv, (str, bytes)) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("argv must be a non-empty sequence of str")
        if any("\x00" in a for a in argv):
            raise ValueError("argv must not contain NUL bytes")
        full = (["sudo", "-n", "--"] if self.target.use_sudo else []) + list(argv)
        command = shlex.join(full)
        data = stdin.encode() if isinstance(stdin, str) else stdin
        limit = self.command_timeout if timeout is None else timeout
        log.info("ssh %r run %s (stdin %d bytes)", self, command, len(data) if data is not None else 0)
        started = time.monotonic()
        chan = self._open_channel()
        try:
            chan.exec_command(command)
            status, out, err = self._communicate(chan, data, started + limit)
        except TimeoutError:
            raise SSHError(f"{command} timed out after {limit:g}s", kind="timeout") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise SSHError(f"{command}: connection lost: {exc}", kind="unreachable") from None
        finally:
            chan.close()
        duration = time.monotonic() - started
        result = CommandResult(
            argv=tuple(argv),
            exit_status=status,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            duration=duration,
        )
        log.debug("ssh %r exit %d in %.2fs (stdout %d, stderr %d bytes)", self, status, duration, len(out), len(err))
        if check and status != 0:
            raise CommandFailed(argv, status, result.stderr, result.stdout)
        return result

    @staticmethod
    def _communicate(chan: paramiko.Channel, data: bytes | None, deadline: float) -> tuple[int, bytes, bytes]:
        # Feed stdin, drain stdout and stderr in one loop: a remote command blocked on a full stdout
        # window while we block writing its stdin (or waiting for its exit) is the classic deadlock.
        out: list[bytes] = []
        err: list[bytes] = []
        size = 0
        offset = 0
        pending = data or b""
        if not pending:
            chan.shutdown_write()
        chan.setblocking(False)
        fd = chan.fileno()
        while True:
            progressed = False
            if offset < len(pending) and chan.send_ready():
                offset += chan.send(pending[offset : offset + _CHUNK])
                progressed = True
                if offset >= len(pending):
                    chan.shutdown_write()
            while chan.recv_ready():
                chunk = chan.recv(_CHUNK)
                if not chunk:
                    break
                out.append(chunk)
                size += len(chunk)
                progressed = True
            while chan.recv_stderr_ready():
                chunk = chan.recv_stderr(_CHUNK)
                if not chunk:
                    break
                err.append(chunk)
                size += len(chunk)
                progressed = True
            if size > MAX_OUTPUT_BYTES:
                raise SSHError(f"remote output exceeds {MAX_OUTPUT_BYTES} bytes", kind="protocol")
            # OpenSSH sends exit-status when the process exits, possibly before output still waiting for
            # our window: only EOF says all output has arrived.
            finished = chan.exit_status_ready() and (chan.eof_received or chan.closed)
            if finished and not chan.recv_ready() and not chan.recv_stderr_ready():
                return chan.recv_exit_status(), b"".join(out), b"".join(err)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if chan.closed and not chan.exit_status_ready():
                raise EOFError("channel closed without an exit status")
            if not progressed:
                # Wakes on stdout/stderr data; exit status and send window are polled at 50 ms.
                select.select([fd], [], [], min(remaining, 0.05))


# -- per-process pool ----------------------------------------------------------------------------------

_pool: dict[tuple[HostTarget, tuple[Any, ...]], SSHSession] = {}
_pool_pid = os.getpid()
_pool_lock = threading.Lock()


def get_session(target: HostTarget, **kw: Any) -> SSHSession:
    """The pooled session for target (one connection per target and options); reconnects on demand.

    Keyed by the whole target, host key included, so re-pinning a key never reuses the old connection.
    """
    global _pool_pid
    key = (target, tuple(sorted((k, id(v) if isinstance(v, paramiko.PKey) else v) for k, v in kw.items())))
    with _pool_lock:
        if _pool_pid != os.getpid():
            # A forked worker child must not share the parent's sockets.
            _pool.clear()
            _pool_pid = os.getpid()
        session = _pool.get(key)
        if session is None:
            session = _pool[key] = SSHSession(target, **kw)
    return session


def close_all_sessions() -> None:
    with _pool_lock:
        sessions = list(_pool.values())
        _pool.clear()
    for s in sessions:
        s.close()
