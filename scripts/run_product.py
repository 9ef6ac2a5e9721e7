"""Bring up the whole product on one machine and stop it cleanly on Ctrl-C.

Started by ``./run`` (which has already made the virtualenv). Steps: secret
key, database (SQLite unless DATABASE_URL says otherwise), Redis (REDIS_URL
or a private redis-server), the lab with demo data when running as root,
demo users, then the portal (gunicorn), a Celery worker and beat.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PY = sys.executable
PORT = int(os.environ.get("PORT", "8000"))
LAB_PREFIX = os.environ.get("EGRESS_LAB_PREFIX", "ep")
DEMO_PASSWORDS = {"admin": "admin-demo-pass", "alice": "alice-demo-pass", "bob": "bob-demo-pass"}

children: list[subprocess.Popen] = []


def say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}", flush=True)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def manage(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "manage.py", *args], cwd=ROOT, env=env, check=check)


def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(VAR / "log" / f"{name}.log", "ab")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    children.append(proc)
    return proc


def ensure_redis(env: dict[str, str]) -> None:
    url = urlparse(env.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    if reachable(url.hostname or "127.0.0.1", url.port or 6379):
        say(f"Redis: using {url.geturl()}")
        return
    exe = shutil.which("redis-server")
    if not exe and os.geteuid() == 0 and shutil.which("apt-get"):
        say("Redis: installing redis-server")
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
        exe = shutil.which("redis-server")
    if not exe:
        sys.exit("Redis is not reachable at REDIS_URL and redis-server is missing: apt-get install redis-server")
    port = free_port()
    spawn("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(VAR)], env)
    for _ in range(50):
        if reachable("127.0.0.1", port):
            break
        time.sleep(0.1)
    env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    say(f"Redis: started a private redis-server on 127.0.0.1:{port}")


def lab_possible() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not running as root (the lab builds network namespaces); running without it"
    if not shutil.which("ip"):
        return False, "iproute2 is missing; running without the lab"
    return True, ""


def wait_http(url: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - our own local URL
                if r.status < 500:
                    return True
        except Exception:
            time.sleep(0.3)
    return False


def stop(lab_up: bool, env: dict[str, str]) -> None:
    say("stopping")
    for proc in reversed(children):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in children:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    if lab_up:
        manage("lab", "down", "--prefix", LAB_PREFIX, env=env, check=False)
    say("stopped; nothing left running")


def main() -> None:
    # Started from a script in the background, SIGINT may be inherited as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    key_file = VAR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    env.setdefault("SECRET_KEY", key_file.read_text().strip())
    env.setdefault("DEBUG", "false")
    env.setdefault("ALLOWED_HOSTS", "localhost,127.0.0.1")
    # Plain HTTP on localhost for the demo; production runs behind TLS.
    env.setdefault("SECURE_SSL_REDIRECT", "false")
    env.setdefault("SESSION_COOKIE_SECURE", "false")
    env.setdefault("CSRF_COOKIE_SECURE", "false")
    env.setdefault("SECURE_HSTS_SECONDS", "0")
    env.setdefault("EGRESS_SSH_KEY_FILE", str(VAR / "ssh" / "id_ed25519"))
    env.setdefault("EGRESS_LAB_PREFIX", LAB_PREFIX)
    env["DJANGO_SETTINGS_MODULE"] = "egressportal.settings"
    say("database: " + env.get("DATABASE_URL", f"SQLite at {VAR / 'db.sqlite3'} (set DATABASE_URL for PostgreSQL)"))

    lab_up = False
    try:
        ensure_redis(env)
        say("migrating the database")
        manage("migrate", "--noinput", "-v", "0", env=env)
        manage("collectstatic", "--noinput", "-v", "0", env=env)
        manage("demo_users", *[f"{u}={p}" for u, p in DEMO_PASSWORDS.items()], env=env)
        ok, why = lab_possible()
        if ok:
            say("building the lab (gateways, nodes, internet, echo server) with demo data")
            lab_up = manage("lab", "up", "--prefix", LAB_PREFIX, env=env, check=False).returncode == 0
            if not lab_up:
                say("the lab could not be built (see above); running without it")
        else:
            say(f"lab: {why}")
        say("starting the portal, a worker, beat and two probers")
        spawn("portal", [PY, "-m", "gunicorn", "egressportal.wsgi", "--bind", f"127.0.0.1:{PORT}",
                         "--workers", "2", "--threads", "4", "--access-logfile", "-"], env)
        spawn("worker", [PY, "-m", "celery", "-A", "workers.celery", "worker", "--loglevel", "INFO",
                         "--concurrency", "2", "--without-gossip", "--without-mingle", "--queues", "celery,sweep",
                         "--hostname", "reconcile@%h"], env)
        # Two probers: one leads (detects and fails over), the other stands by hot (docs/OPERATIONS.md).
        spawn("prober1", [PY, "manage.py", "prober", "--name", "prober1"], env)
        spawn("prober2", [PY, "manage.py", "prober", "--name", "prober2"], env)
        spawn("beat", [PY, "-m", "celery", "-A", "workers.celery", "beat", "--loglevel", "INFO",
                       "--schedule", str(VAR / "celerybeat-schedule")], env)
        url = f"http://127.0.0.1:{PORT}/"
        if not wait_http(url + "accounts/login/"):
            sys.exit(f"the portal did not come up; see {VAR / 'log' / 'portal.log'}")
        print(
            f"""
Egress Portal is running at {url}

  App owner: alice / {DEMO_PASSWORDS['alice']}   (also bob / {DEMO_PASSWORDS['bob']})
  Admin:     admin / {DEMO_PASSWORDS['admin']}   ({url}admin/)
  API docs:  {url}api/v1/docs/

Try: log in as alice, open "shop-api", click "Enable dedicated egress", watch it go live,
then "Check egress" to see the address the internet sees.
Logs are in {VAR / 'log'}. Press Ctrl-C to stop everything.
""",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(p.poll() is None for p in children):
            time.sleep(0.5)
        dead = [p for p in children if p.poll() is not None]
        say(f"a process exited unexpectedly ({dead[0].args[2] if len(dead[0].args) > 2 else dead[0].args}); stopping")
    except KeyboardInterrupt:
        pass
    finally:
        stop(lab_up, env)


if __name__ == "__main__":
    main()
