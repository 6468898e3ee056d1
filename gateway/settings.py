"""Settings for the cashback gateway, read from the environment (and `.env` if present).

Every value comes from an environment variable documented in the README. A bad value fails
loudly at start, not on the first request that needs it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    # Variables already in the environment win over the file.
    env.read_env(BASE_DIR / ".env")

# Keys that must never run a real deployment: Django's template placeholder and ours.
KNOWN_DEVELOPMENT_KEYS = {
    "change-me",
    "django-insecure-change-me",
    "dev",
    "insecure-development-key",
}

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(`make run` writes one into .env), or set DEBUG=on for development."
        )
    SECRET_KEY = "insecure-development-key"
elif not DEBUG and (SECRET_KEY in KNOWN_DEVELOPMENT_KEYS or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "SECRET_KEY is a known development key or shorter than 32 characters. "
        "Set SECRET_KEY to a long random string."
    )

# Key material for API key and webhook HMACs. Separate from SECRET_KEY so that rotating the
# session secret does not invalidate every merchant's API key.
API_KEY_HMAC_SECRET = env.str("API_KEY_HMAC_SECRET", default=SECRET_KEY)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "accounts",
    "merchants",
    "cashback",
    "audit",
    "monitoring",
]

MIDDLEWARE = [
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.twofactor.AdminTwoFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gateway.middleware.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",
]
# The merchant API, the drop-in endpoint and the probes use none of the back office's static
# files, sessions, CSRF cookies, logins, second factor, messages or page policy: gateway/wsgi.py
# serves these paths through this shorter chain, the same middleware in the same order.
API_PATHS = ("/api/v1/", "/new_purchase", "/healthz", "/readyz", "/metrics")
API_MIDDLEWARE = [
    "gateway.middleware.RequestIdMiddleware",
    "gateway.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "gateway.urls"
WSGI_APPLICATION = "gateway.wsgi.application"

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
                "gateway.context_processors.gateway_mode",
                "cashback.context_processors.admin_alerts",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock when a
    # transaction starts, so threads queue on the busy timeout instead of failing with
    # "database is locked" when a read transaction tries to upgrade to a write.
    _db.setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # A file, not memory, so tests can share the test database with processes they start.
    _db.setdefault("TEST", {})["NAME"] = str(Path(_db["NAME"]).with_suffix("")) + "-test.sqlite3"
elif _db["ENGINE"] == "django.db.backends.postgresql":
    # Django's backend with two additions (gateway/postgresql/): every session gets these
    # timeouts, so a stalled database or a row lock held elsewhere fails the statement (a 503
    # to the merchant) instead of holding the request (see docs/faults.md); and a dead pooled
    # connection is replaced before use. 0 turns a timeout off (behind PgBouncer, which
    # refuses startup options, set them on the role instead: docs/deploy.md).
    _db["ENGINE"] = "gateway.postgresql"
    _db["SESSION_TIMEOUTS"] = {
        "statement_timeout": env.float("DATABASE_STATEMENT_TIMEOUT", default=5.0),
        "lock_timeout": env.float("DATABASE_LOCK_TIMEOUT", default=2.0),
    }
    if env.bool("DATABASE_POOL", default=True):
        # psycopg's pool: connections are shared by the threads of a gunicorn worker and
        # handed back at the end of each request. Django requires CONN_MAX_AGE = 0 with it.
        _db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN", default=2),
            "max_size": env.int("DATABASE_POOL_MAX", default=20),
            "timeout": env.int("DATABASE_POOL_TIMEOUT", default=10),
        }
        _db["CONN_MAX_AGE"] = 0
        # Test a connection before handing it out, so connections the database dropped (a
        # restart, a reset) are replaced instead of answered 503: its socket is polled, and
        # only one that may be dead gets an empty query; the backend then sweeps the whole
        # pool (gateway/postgresql/base.py).
        _db["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
    else:
        _db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
        _db["CONN_HEALTH_CHECKS"] = True
    # The few statements every purchase runs bind their parameters on the server and are
    # prepared once per connection (gateway.postgresql.HotCursor). Turn preparing off behind
    # a PgBouncer in transaction mode that does not track prepared statements (before 1.21,
    # or max_prepared_statements = 0): docs/deploy.md.
    _db["PREPARE_HOT"] = env.bool("DATABASE_PREPARE", default=True)
    if _db["PREPARE_HOT"]:
        # psycopg prepares nothing on a connection whose threshold is None (Django's default),
        # whatever a cursor asks. Only the hot cursor asks (prepare=True); no other statement
        # is executed often enough to be prepared by count, and client-side binding cursors
        # (every ORM query) are never prepared.
        _db.setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
    # Behind PgBouncer in transaction mode a server-side cursor (QuerySet.iterator()) may be
    # read from another server connection than the one that opened it: turn them off there.
    _db["DISABLE_SERVER_SIDE_CURSORS"] = env.bool("DISABLE_SERVER_SIDE_CURSORS", default=False)

# Reports and exports (commands) scan far more rows than a request: their own timeout.
DATABASE_REPORT_STATEMENT_TIMEOUT = env.float("DATABASE_REPORT_STATEMENT_TIMEOUT", default=300.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (shared by throttling; Redis when several hosts serve) ---------------------------

CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://gateway")}
# With the default (per-process) cache, throttles count in this SQLite file, shared by every
# process of the host (gateway.throttling.HostStore). Put it on a tmpfs the service user
# alone can write (systemd's RuntimeDirectory, deploy/cashback-gateway.service); the default
# is named after the project directory and database, so two deployments never share it.
_deployment = f"{BASE_DIR}|{DATABASES['default'].get('NAME')}".encode()
THROTTLE_HOST_DB = env.str(
    "THROTTLE_HOST_DB",
    default=str(
        Path(tempfile.gettempdir())
        / f"cashback-gateway-throttle-{hashlib.sha256(_deployment).hexdigest()[:16]}.sqlite3"
    ),
)
# django-environ lower-cases `?key_prefix=` and `?version=` for Django's own Redis backend,
# which reads them only in upper case; without this, hosts of two deployments sharing one
# Redis would silently share throttle counters.
for _option in ("key_prefix", "version", "key_function"):
    if _option in CACHES["default"]:
        CACHES["default"][_option.upper()] = CACHES["default"].pop(_option)

# --- Internationalisation -------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
# Times with seconds and zone, dates as YYYY-MM-DD, on every admin page.
FORMAT_MODULE_PATH = ["gateway.formats"]
USE_TZ = True

# --- Static files (whitenoise under gunicorn) -----------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", default=not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security -------------------------------------------------------------------------------

# Cookies are Secure by default; `make run` turns this off in .env because it serves plain
# HTTP on 127.0.0.1. TLS and, by default, HSTS are the reverse proxy's job (README).
SECURE_COOKIES = env.bool("SECURE_COOKIES", default=True)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
# The gateway is served from its own host name, so its subdomains can be HTTPS-only too.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Preloading is a decision about the whole registered domain, made by its owner at
# hstspreload.org, not by this app; so its warning (W021) is silenced unless configured.
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=["security.W021"])
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Bodies are limited before parsing by gateway.middleware.BodySizeLimitMiddleware.
MAX_REQUEST_BODY_BYTES = 64 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY_BYTES

# Messages live in the session (the database), never in a cookie: admin shows a new API key
# or webhook secret once, in a message, and a cookie would carry it to the browser's disk and
# to every proxy log that records cookies.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# Admin login brute-force protection: the 11th failure in a row is locked out.
# Staff sign in with a second factor (accounts.twofactor); wrong codes count as failures.
ADMIN_REQUIRE_2FA = env.bool("ADMIN_REQUIRE_2FA", default=True)
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Cashback gateway")

AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
# By user name and address together: failures for an admin's name from one address lock
# that name at that address only, so nobody can lock an admin out everywhere by guessing.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"


def _client_ip(request: Any) -> str:
    """Return the client's address as the API throttles see it (`NUM_PROXIES` aware).

    Behind a load balancer every REMOTE_ADDR is the balancer's, so counting lockouts by it
    would let ten failures by anyone lock every admin out; with NUM_PROXIES=0 a forged
    X-Forwarded-For is ignored.
    """
    from rest_framework.throttling import BaseThrottle

    return BaseThrottle().get_ident(request)


AXES_CLIENT_IP_CALLABLE = _client_ip

# --- REST framework -------------------------------------------------------------------------

API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="20/s")
API_IP_THROTTLE_RATE = env.str("API_IP_THROTTLE_RATE", default="100/s")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["merchants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["merchants.authentication.IsMerchant"],
    "DEFAULT_PARSER_CLASSES": ["gateway.parsers.DecimalJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": [
        "gateway.throttling.ApiKeyThrottle",
        "gateway.throttling.ClientIpThrottle",
    ],
    "EXCEPTION_HANDLER": "gateway.exceptions.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Cashback gateway API",
    "DESCRIPTION": (
        "Report paid purchases to the Obyte Cashback Program through your payment "
        "processor. Authenticate with `Authorization: Bearer <api key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: Swagger UI would fetch it from validator.swagger.io.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CurrencyEnum": "gateway.money.Currency",
    },
}

# --- The upstream cashback API --------------------------------------------------------------

CASHBACK_SANDBOX = env.bool("CASHBACK_SANDBOX", default=False)
CASHBACK_SANDBOX_URL = env.str("CASHBACK_SANDBOX_URL", default="http://127.0.0.1:8900/new_purchase")
SANDBOX_PARTNER = "sandbox"
SANDBOX_PARTNER_KEY = "sandbox-partner-key"

if CASHBACK_SANDBOX:
    CASHBACK_API_URL = CASHBACK_SANDBOX_URL
    CASHBACK_PARTNER = SANDBOX_PARTNER
    CASHBACK_PARTNER_KEY = SANDBOX_PARTNER_KEY
else:
    CASHBACK_API_URL = env.str("CASHBACK_API_URL", default="https://byte.money/test/new_purchase")
    CASHBACK_PARTNER = env.str("CASHBACK_PARTNER", default="")
    CASHBACK_PARTNER_KEY = env.str("CASHBACK_PARTNER_KEY", default="")
    _key_file = env.str("CASHBACK_PARTNER_KEY_FILE", default="")
    if _key_file and not CASHBACK_PARTNER_KEY:
        try:
            CASHBACK_PARTNER_KEY = Path(_key_file).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"CASHBACK_PARTNER_KEY_FILE={_key_file} cannot be read ({exc.strerror})."
            ) from None
    if not (CASHBACK_PARTNER and CASHBACK_PARTNER_KEY):
        raise ImproperlyConfigured(
            "Partner credentials are not configured. Set CASHBACK_PARTNER and "
            "CASHBACK_PARTNER_KEY (or CASHBACK_PARTNER_KEY_FILE), or set CASHBACK_SANDBOX=on "
            "to use the local sandbox upstream."
        )

CASHBACK_TIMEOUT = env.float("CASHBACK_TIMEOUT", default=10.0)
CASHBACK_CONNECT_TIMEOUT = env.float("CASHBACK_CONNECT_TIMEOUT", default=3.05)
# A lease outlives the longest call by this margin before the worker may call it lost.
CASHBACK_LEASE_MARGIN = env.float("CASHBACK_LEASE_MARGIN", default=20.0)
# A call returns within CASHBACK_TIMEOUT + 0.25 s (gateway.http.DEADLINE_SLACK); a margin
# below 1 s could let a lease run out while its call is still unwinding.
if CASHBACK_TIMEOUT <= 0 or CASHBACK_CONNECT_TIMEOUT <= 0 or CASHBACK_LEASE_MARGIN < 1:
    raise ImproperlyConfigured(
        "CASHBACK_TIMEOUT and CASHBACK_CONNECT_TIMEOUT must be positive and "
        "CASHBACK_LEASE_MARGIN at least 1 second."
    )
# Seconds between retries of a pending purchase; the last one repeats. Jitter is added.
CASHBACK_RETRY_SCHEDULE = [
    int(s)
    for s in env.list("CASHBACK_RETRY_SCHEDULE", default=["10", "30", "60", "300", "900", "1800"])
]
CASHBACK_RETRY_WINDOW = env.int("CASHBACK_RETRY_WINDOW", default=24 * 3600)
# A queued purchase that no request claimed within this many seconds is the worker's.
CASHBACK_QUEUED_GRACE = env.float("CASHBACK_QUEUED_GRACE", default=5.0)
CASHBACK_WORKER_THREADS = env.int("CASHBACK_WORKER_THREADS", default=8)
# The worker's longest sleep when idle (a slot that frees or a NOTIFY wakes it sooner), and
# how often it expires leases and fails purchases past their window.
CASHBACK_WORKER_IDLE_SLEEP = env.float("CASHBACK_WORKER_IDLE_SLEEP", default=1.0)
# How much lower than the web processes the worker's CPU priority is (nice; 0: the same):
# under load the requests merchants wait on come first, background sends a moment later.
CASHBACK_WORKER_NICE = env.int("CASHBACK_WORKER_NICE", default=10)
if not 0 <= CASHBACK_WORKER_NICE <= 19:
    raise ImproperlyConfigured("CASHBACK_WORKER_NICE must be between 0 and 19.")
# Upstream answers the database could not take are kept here until the worker of this host
# records them (cashback/spool.py): local disk, one directory per host.
CASHBACK_SPOOL_DIR = env.str("CASHBACK_SPOOL_DIR", default=str(BASE_DIR / "var" / "spool"))
CASHBACK_WORKER_HOUSEKEEPING_INTERVAL = env.float(
    "CASHBACK_WORKER_HOUSEKEEPING_INTERVAL", default=1.0
)
# The upstream connection pool: as large as the threads of a gunicorn worker or a worker.
CASHBACK_HTTP_POOL_SIZE = env.int(
    "CASHBACK_HTTP_POOL_SIZE",
    default=max(env.int("GUNICORN_THREADS", default=16), CASHBACK_WORKER_THREADS),
)

# --- Merchant webhooks ----------------------------------------------------------------------

WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)
WEBHOOK_RETRY_SCHEDULE = [
    int(s) for s in env.list("WEBHOOK_RETRY_SCHEDULE", default=["10", "60", "300", "1800", "7200"])
]
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=12)
# Webhook slots of a worker, apart from its upstream sends; and the most deliveries of one
# merchant in flight at once (across workers), so a slow endpoint cannot hold every slot.
WEBHOOK_WORKER_THREADS = env.int("WEBHOOK_WORKER_THREADS", default=4)
WEBHOOK_MERCHANT_CONCURRENCY = env.int("WEBHOOK_MERCHANT_CONCURRENCY", default=2)
# Development and tests only: allow http:// and loopback/private webhook targets.
WEBHOOK_ALLOW_PRIVATE = env.bool("WEBHOOK_ALLOW_PRIVATE", default=False)
# `balance.low` is sent when a deposit's runway (available / average daily reservations over
# the last 7 days) drops under this many days; 0 turns the event off.
WEBHOOK_BALANCE_LOW_DAYS = env.float("WEBHOOK_BALANCE_LOW_DAYS", default=3.0)

# --- Currency conversion (docs/currencies.md) ----------------------------------------------

# Where `manage.py update_rates` fetches the ECB reference rates (CSV, or a zip of one).
FX_RATES_URL = env.str(
    "FX_RATES_URL", default="https://www.ecb.europa.eu/stats/eurofxref/eurofxref-hist.zip"
)
FX_RATES_TIMEOUT = env.float("FX_RATES_TIMEOUT", default=30.0)
# A rate older than this many days (weekends, holidays) is not used: the purchase is refused.
FX_MAX_AGE_DAYS = env.int("FX_MAX_AGE_DAYS", default=4)

# --- Operations: metrics, the worker's heartbeat (docs/operations.md) ---------------------

# The version each worker reports in its heartbeat.
GATEWAY_VERSION = env.str("GATEWAY_VERSION", default="1.0.0")
# `/metrics` answers only this bearer token; unset: only direct connections from loopback.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Directories of other processes' samples to add (the workers'; PROMETHEUS_MULTIPROC_DIR is
# this process's own).
METRICS_EXTRA_DIRS = env.list("METRICS_EXTRA_DIRS", default=[])
METRICS_CACHE_SECONDS = env.float("METRICS_CACHE_SECONDS", default=5.0)
METRICS_RUNWAY_CACHE_SECONDS = env.float("METRICS_RUNWAY_CACHE_SECONDS", default=60.0)
# A merchant's deposit that lasts fewer days than this at its spend raises `runway_low`.
RUNWAY_ALERT_DAYS = env.float("RUNWAY_ALERT_DAYS", default=1.0)
# How often each worker checks the runways for that alert (seconds).
ALERT_CHECK_INTERVAL = env.float("ALERT_CHECK_INTERVAL", default=60.0)
# A worker writes its heartbeat at most this often, and is silent after this long without.
WORKER_HEARTBEAT_INTERVAL = env.float("WORKER_HEARTBEAT_INTERVAL", default=2.0)
WORKER_SILENT_AFTER = env.float("WORKER_SILENT_AFTER", default=60.0)
# `/readyz` answers 503 while no worker completed a pass within WORKER_SILENT_AFTER.
READYZ_REQUIRE_WORKER = env.bool("READYZ_REQUIRE_WORKER", default=False)

# --- Logging --------------------------------------------------------------------------------

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# plain: one line of text per record; json: one JSON object per line (docs/operations.md).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain").strip().lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "gateway.logging.RequestIdFilter"},
        "redact": {"()": "gateway.logging.RedactSecretsFilter"},
        "expected": {"()": "gateway.logfilters.NoTracebackForExpected"},
    },
    "formatters": {
        "plain": {
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s%(fields)s",
        },
        "json": {"()": "gateway.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
        # Python warnings as log records, so that JSON output stays JSON on every line.
        "py.warnings": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        # An expected 403 or 404 logs one line, without a traceback.
        "django.request": {"filters": ["expected"]},
    },
}
