"""Settings of the floor: a bare Django project on the gateway's database and upstream.

The database settings (with the connection pool and its health check), the secrets and the
upstream URL are the gateway's own, read by importing its settings module, so both sides of
a comparison talk to the same PostgreSQL and sandbox the same way; the database backend is
stock Django's. No middleware, no DRF, no logging.
"""

from __future__ import annotations

from gateway import settings as gateway

SECRET_KEY = gateway.SECRET_KEY
API_KEY_HMAC_SECRET = gateway.API_KEY_HMAC_SECRET
DEBUG = False
ALLOWED_HOSTS = gateway.ALLOWED_HOSTS
# Stock Django's backend on the same settings: the gateway's own (gateway/postgresql/: session
# timeouts, the hot cursor, the cheap pool check) is part of what is measured.
DATABASES = {
    "default": {
        **gateway.DATABASES["default"],
        "ENGINE": gateway.DATABASES["default"]["ENGINE"].replace(
            "gateway.postgresql", "django.db.backends.postgresql"
        ),
    }
}
# Only for the ORM variant of the floor (its models); nothing here adds per-request work.
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "merchants", "cashback"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.floor.urls"
USE_TZ = True
TIME_ZONE = "UTC"

CASHBACK_API_URL = gateway.CASHBACK_API_URL
CASHBACK_PARTNER = gateway.CASHBACK_PARTNER
CASHBACK_PARTNER_KEY = gateway.CASHBACK_PARTNER_KEY
CASHBACK_TIMEOUT = gateway.CASHBACK_TIMEOUT
CASHBACK_HTTP_POOL_SIZE = gateway.CASHBACK_HTTP_POOL_SIZE

LOGGING_CONFIG = None
