"""Egress Portal settings, read from the environment (12-factor).

Every knob is an environment variable; defaults are safe for production when
DEBUG is off and convenient for a laptop when it is on.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env is convenient for development; the environment always wins.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "egressportal.core",
    "egressportal.tokens",
    "egressportal.api",
    "egressportal.portal",
    "egressportal.ops",
    "egressportal.notifications",
    # The worker side: the lab command and the lab locator (no models).
    "workers",
]

MIDDLEWARE = [
    # First: every line of a request carries its id, and probes skip the host check and the session.
    "egressportal.ops.middleware.RequestIdMiddleware",
    "egressportal.ops.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during authentication into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "egressportal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "egressportal.wsgi.application"
ASGI_APPLICATION = "egressportal.asgi.application"

# The embedded default is a SQLite file; production sets a PostgreSQL URL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    (BASE_DIR / "var").mkdir(exist_ok=True)
    # Several processes (portal, worker, beat) share the file: wait for locks
    # instead of failing, and take the write lock at BEGIN to avoid upgrade deadlocks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# A failed CSRF check in the portal's look; htmx requests get a banner that offers a reload.
CSRF_FAILURE_VIEW = "egressportal.portal.views.csrf_failure"

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Proxies in front of the portal that we run (a load balancer, a TLS terminator): each appends the address
# it saw to X-Forwarded-For. With N, the client is the N-th entry from the right; with 0 (the default) the
# header is ignored. The API throttles and the log-in limits both use this rule (egressportal/clientaddr.py),
# so a client cannot pick its own address by sending the header. Set it to exactly the number of proxies:
# one too many lets clients forge their address again.
TRUSTED_PROXIES = env.int("TRUSTED_PROXIES", default=0)

# Login brute force (django-axes), two limits (egressportal/loginlimits.py): 5 failures for one username from
# one address lock that pair out, and 20 failures from one address across any usernames (password spraying)
# lock the address out, for 15 minutes, even with the right password. A success clears only that user's own
# failures. Covers the portal login and the admin (both authenticate through the backends below); the API
# takes tokens, not passwords.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "egressportal.loginlimits.LoginLimitHandler"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_IP_FAILURE_LIMIT = env.int("AXES_IP_FAILURE_LIMIT", default=20)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15.0))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "egressportal.clientaddr.client_address"

# Content-Security-Policy: the portal and the admin run no inline script or style; only the API docs
# pages relax styles (egressportal/api/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Behind trusted proxies, the one that terminates TLS says whether the request came over HTTPS
# ("HEADER,value", e.g. X-Forwarded-Proto,https); without proxies nobody may claim it, so it is unset.
_proxy_ssl = env.list("SECURE_PROXY_SSL_HEADER", default=["X-Forwarded-Proto", "https"] if TRUSTED_PROXIES else [])
if _proxy_ssl:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl[0].upper().replace("-", "_"), _proxy_ssl[1])

# Production hardening: on whenever DEBUG is off.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# The largest request body anyone may send (the API's JSON parser and Django's forms): 256 KiB holds the
# largest legitimate request (a per-host SSH key, a pool's excluded addresses) many times over.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=256 * 1024)

# REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "egressportal.tokens.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON both ways (no form/multipart bodies, no browsable API); egressportal/api/views.py says the same.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["egressportal.api.parsers.ApiJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
        "rest_framework.filters.SearchFilter",
    ],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/min"),
        "user": env.str("API_THROTTLE_USER", default="6000/min"),
    },
}
# API tokens (django-rest-knox, egressportal/tokens/): only a SHA-512 hash is stored; each token expires; a user
# makes, names and revokes them in the portal. "egp_" marks ours (secret scanners, the retired-token message);
# the header stays "Authorization: Token <token>".
KNOX_TOKEN_MODEL = "tokens.ApiToken"  # noqa: S105 - a model name, not a secret
REST_KNOX = {
    "TOKEN_PREFIX": "egp_",
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_TTL": timedelta(days=90),
    "AUTO_REFRESH": False,
}
# knox's own migrations would create its stock token table although our model replaces it (swapped models
# are skipped everywhere else, not by those migrations); with none, nothing of knox's reaches the database.
MIGRATION_MODULES = {"knox": None}
EGRESS_API_TOKEN_MAX_DAYS = env.int("EGRESS_API_TOKEN_MAX_DAYS", default=365)
EGRESS_API_TOKENS_PER_USER = env.int("EGRESS_API_TOKENS_PER_USER", default=20)

SPECTACULAR_SETTINGS = {
    "TITLE": "Egress Portal API",
    "DESCRIPTION": "Dedicated egress IPs for apps: self-service and automation.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and ReDoc assets are served from our own static files, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Broker: Redis carries messages only; the database is the source of truth.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=240)
# Above the longest task, so a slow task is not redelivered while it still runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT * 2,
    # A worker polls its queues in the order given (user lane "celery" first, then "sweep"), not round
    # robin: a sweep's backlog never delays a toggle (egressportal/celery.py, the lanes).
    "queue_order_strategy": "priority",
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None  # keep trying while Redis restarts
# Remote control rides on Redis PUB/SUB, whose reconnect path in kombu 5.7
# crashes the worker when Redis restarts; the workers are driven by the
# database and beat, so they do not need it. Set it to true for `celery inspect`.
# Health probes run every second on their own queue, served by their own
# worker process, so a burst of reconciles never delays failover detection.
CELERY_TASK_DEFAULT_QUEUE = "celery"
# The two lanes (egressportal/celery.py RECONCILE_QUEUE, SWEEP_QUEUE), user lane first.
CELERY_TASK_QUEUES = (Queue("celery"), Queue("sweep"))
CELERY_TASK_ROUTES: dict[str, dict[str, str]] = {}
CELERY_WORKER_ENABLE_REMOTE_CONTROL = env.bool("CELERY_WORKER_ENABLE_REMOTE_CONTROL", default=False)
# One scheduler: beat's own file scheduler; the schedule is code (workers/celery.py), the file only keeps
# when each entry last ran. It lives under var/, never in whatever directory beat was started from.
CELERY_BEAT_SCHEDULER = "celery.beat:PersistentScheduler"
CELERY_BEAT_SCHEDULE_FILENAME = env.str("EGRESS_BEAT_SCHEDULE_FILE", default=str(BASE_DIR / "var" / "celerybeat-schedule"))
CELERY_TIMEZONE = TIME_ZONE

# Egress domain
EGRESS_SSH_KEY_FILE = env.str("EGRESS_SSH_KEY_FILE", default=str(BASE_DIR / "var" / "ssh" / "id_ed25519"))
# Fernet keys for secrets at rest (per-host SSH keys), comma-separated, the first encrypts (egressportal/core/secrets.py).
EGRESS_FERNET_KEYS = env.list("EGRESS_FERNET_KEYS", default=[])
EGRESS_IPS_PER_APP = env.int("EGRESS_IPS_PER_APP", default=2)
EGRESS_QUARANTINE_DAYS = env.int("EGRESS_QUARANTINE_DAYS", default=30)
# Placements (which addresses on which node are an app's) come from the platform only. A node's
# report holds at most this many addresses (a real node runs a few hundred pods at most).
EGRESS_MAX_PLACEMENTS_PER_NODE = env.int("EGRESS_MAX_PLACEMENTS_PER_NODE", default=5000)
# Per-tenant quotas; staff override them per user (admin: Tenant quotas). Addresses in quarantine
# count against the tenant that released them until their quarantine ends.
EGRESS_QUOTA_APPS = env.int("EGRESS_QUOTA_APPS", default=50)
EGRESS_QUOTA_ADDRESSES = env.int("EGRESS_QUOTA_ADDRESSES", default=20)
EGRESS_SWEEP_SECONDS = env.float("EGRESS_SWEEP_SECONDS", default=30.0)
# The prober (workers/prober.py; docs/OPERATIONS.md, "Failover"): one echo byte per host every interval
# over an open SSH session; a host silent for dead_after seconds with min_unanswered probes sent meanwhile
# is down; a host that was down must answer steadily for recover_after seconds (and a gateway be repaired)
# before traffic returns. A gateway's links are read every links_seconds.
EGRESS_PROBE_INTERVAL = env.float("EGRESS_PROBE_INTERVAL", default=0.1)
EGRESS_PROBE_DEAD_AFTER = env.float("EGRESS_PROBE_DEAD_AFTER", default=0.5)
EGRESS_PROBE_MIN_UNANSWERED = env.int("EGRESS_PROBE_MIN_UNANSWERED", default=3)
EGRESS_PROBE_RECOVER_AFTER = env.float("EGRESS_PROBE_RECOVER_AFTER", default=1.0)
EGRESS_PROBE_LINKS_SECONDS = env.float("EGRESS_PROBE_LINKS_SECONDS", default=0.5)
EGRESS_PROBE_CONNECT_TIMEOUT = env.float("EGRESS_PROBE_CONNECT_TIMEOUT", default=1.0)
EGRESS_PROBER_RECONCILE_THREADS = env.int("EGRESS_PROBER_RECONCILE_THREADS", default=16)
# Leader election among probers: a PostgreSQL advisory lock; with SQLite (one machine) this file lock.
EGRESS_PROBER_LOCK_FILE = env.str("EGRESS_PROBER_LOCK_FILE", default=str(BASE_DIR / "var" / "prober.lock"))
EGRESS_SSH_CONNECT_TIMEOUT = env.float("EGRESS_SSH_CONNECT_TIMEOUT", default=3.0)
EGRESS_SSH_COMMAND_TIMEOUT = env.float("EGRESS_SSH_COMMAND_TIMEOUT", default=60.0)
# A reconcile holds its host's lease this long (renewed before applying); a
# killed worker's lease expires after it.
EGRESS_LEASE_SECONDS = env.float("EGRESS_LEASE_SECONDS", default=20.0)
# A queued-reconcile marker older than this no longer absorbs new requests
# (its message may have been lost with the broker).
EGRESS_COALESCE_STALE_SECONDS = env.float("EGRESS_COALESCE_STALE_SECONDS", default=30.0)
# Set by `./run` when the portal runs next to the lab: enables "Check egress".
EGRESS_LAB_PREFIX = env.str("EGRESS_LAB_PREFIX", default="")
EGRESS_RECONCILE_DISPATCH = env.str("EGRESS_RECONCILE_DISPATCH", default="celery")

# Notifications. Webhooks go to https URLs on public addresses only; plain http to a loopback
# address is for development (a receiver on the same machine), on by default only with DEBUG.
EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK = env.bool("EGRESS_WEBHOOK_ALLOW_HTTP_LOOPBACK", default=DEBUG)
EGRESS_WEBHOOK_TIMEOUT = env.float("EGRESS_WEBHOOK_TIMEOUT", default=5.0)
# Email goes through Django's backend: the console in development, SMTP (EMAIL_HOST, ...) otherwise.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="egress-portal@localhost")

# Operability: /metrics is closed unless a staff session, this bearer token, or METRICS_PUBLIC.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)
# Worker-side counters live in Redis (see egressportal/ops/store.py); the broker's Redis by default.
EGRESS_METRICS_REDIS_URL = env.str("EGRESS_METRICS_REDIS_URL", default=REDIS_URL)
EGRESS_WORKER_HEARTBEAT_FILE = env.str("EGRESS_WORKER_HEARTBEAT_FILE", default="/tmp/egress-worker-heartbeat")  # noqa: S108
EGRESS_WORKER_HEARTBEAT_SECONDS = env.float("EGRESS_WORKER_HEARTBEAT_SECONDS", default=5.0)
# A worker whose queue holds messages while it takes none for this long, with a free slot, exits (code 75)
# so that its supervisor restarts it (egressportal/ops/worker.py; docs/OPERATIONS.md).
EGRESS_WORKER_STUCK_SECONDS = env.float("EGRESS_WORKER_STUCK_SECONDS", default=30.0)

# JSON lines in production (LOG_FORMAT=plain to override), plain text with DEBUG;
# context fields (request, app, host, task) on every line, secrets scrubbed.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "egressportal.ops.logs.ContextFilter"},
        "scrub": {"()": "egressportal.ops.logs.SecretScrubFilter"},
    },
    "formatters": {
        "plain": {"()": "egressportal.ops.logs.PlainFormatter"},
        "json": {"()": "egressportal.ops.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context", "scrub"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
