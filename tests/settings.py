"""Test settings: the production settings module with test-friendly defaults.

The database comes from DATABASE_URL like everywhere else (PostgreSQL in CI,
SQLite works too); worker processes started by tests use this module as well.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("API_THROTTLE_USER", "100000/min")
os.environ.setdefault("API_THROTTLE_ANON", "100000/min")
# Worker tests start their own Redis on this port (and restart it at will);
# nothing in a test run touches the machine's shared Redis.
os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:{21000 + os.getpid() % 20000}/0")
os.environ.setdefault("EGRESS_SWEEP_SECONDS", "2")
os.environ.setdefault("EGRESS_LEASE_SECONDS", "6")
os.environ.setdefault("EGRESS_COALESCE_STALE_SECONDS", "4")
os.environ.setdefault("EGRESS_SSH_CONNECT_TIMEOUT", "2")

from egressportal.settings import *  # noqa: F403

# Only tests that start a worker send messages to the broker.
EGRESS_RECONCILE_DISPATCH = os.environ.get("EGRESS_RECONCILE_DISPATCH", "none")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in production
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True
# A test database of its own per run, so parallel runs on one server never collide.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    DATABASES["default"].setdefault("TEST", {})["NAME"] = f"test_egressportal_{os.getpid()}"  # noqa: F405
