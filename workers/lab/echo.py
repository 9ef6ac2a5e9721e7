"""The lab's "internet" echo server: answers every GET with the client address it sees (IPv4 or IPv6).

Stdlib only, so it runs with any Python. Started inside the lab's internet namespace:

    python echo.py --bind 198.51.100.10 [--bind 2001:db8:ff::10] --port 80 --pidfile <state_dir>/echo.pid [--daemon]

With --daemon it detaches and the parent exits only once the socket is bound (0) or binding failed (1),
so the caller knows the server is ready without polling.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "lab-echo/1"

    def _answer(self, with_body: bool) -> None:
        body = f"{self.client_address[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:  # the http.server API names it
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # benchmarks send thousands of requests; a log line each would dominate


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512


class EchoServer6(EchoServer):
    address_family = socket.AF_INET6


def serve(binds: list[str], port: int, pidfile: Path | None, ready_fd: int | None = None) -> None:
    servers = []
    for bind in binds:
        try:
            servers.append((EchoServer6 if ":" in bind else EchoServer)((bind, port), EchoHandler))
        except OSError as exc:
            if ready_fd is not None:
                os.write(ready_fd, f"error: cannot listen on {bind}:{port}: {exc}".encode())
                os.close(ready_fd)
            raise SystemExit(f"echo: cannot listen on {bind}:{port}: {exc}") from None
    if pidfile is not None:
        pidfile.write_text(f"{os.getpid()}\n")
    if ready_fd is not None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, action="append", help="an address to listen on (repeatable)")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--pidfile", type=Path)
    parser.add_argument("--daemon", action="store_true")
    args = parser.parse_args(argv)
    if not args.daemon:
        serve(args.bind, args.port, args.pidfile)
        return 0
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        message = os.read(read_fd, 4096).decode(errors="replace")
        if message != "ok":
            print(message or "error: the echo server died before it was ready", file=sys.stderr)
            return 1
        return 0
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    serve(args.bind, args.port, args.pidfile, write_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
