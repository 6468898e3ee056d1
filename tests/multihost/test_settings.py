"""Settings a multi-host deployment relies on, read from the environment by a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.multihost.cluster import BASE_DIR

# Import only the settings module (not every app): it is what each host reads at start.
PROBE = """
import json
from django.core.cache.backends.redis import RedisCache
from gateway import settings
cache, db = dict(settings.CACHES["default"]), settings.DATABASES["default"]
backend = RedisCache(cache.pop("LOCATION"), cache)
print(json.dumps({
    "key": backend.make_key("throttle_api_key_7"),
    "server_side_cursors_off": db["DISABLE_SERVER_SIDE_CURSORS"],
    "pool": "pool" in db.get("OPTIONS", {}),
    "conn_max_age": db["CONN_MAX_AGE"],
}))
"""


def settings_in_a_fresh_process(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gateway.settings",
            "SECRET_KEY": "settings-probe-secret-key-0123456789abcdefghijkl",
            "CASHBACK_SANDBOX": "on",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pgbouncer_settings_and_a_redis_key_prefix_reach_django() -> None:
    probe = settings_in_a_fresh_process(
        CACHE_URL="redis://127.0.0.1:6379/0?key_prefix=staging",
        DATABASE_URL="postgres://cashback@pgbouncer.internal:6432/cashback",
        DATABASE_POOL="off",
        CONN_MAX_AGE="60",
        DISABLE_SERVER_SIDE_CURSORS="on",
    )

    # django-environ passes `key_prefix` in lower case, which Django's Redis backend ignores.
    assert probe == {
        "key": "staging:1:throttle_api_key_7",
        "server_side_cursors_off": True,
        "pool": False,
        "conn_max_age": 60,
    }


def test_by_default_postgresql_uses_psycopgs_pool_and_server_side_cursors() -> None:
    probe = settings_in_a_fresh_process(
        CACHE_URL="redis://127.0.0.1:6379/0",
        DATABASE_URL="postgres://cashback@db.internal:5432/cashback",
        DATABASE_POOL="on",
        DISABLE_SERVER_SIDE_CURSORS="off",
    )

    assert probe == {
        "key": ":1:throttle_api_key_7",
        "server_side_cursors_off": False,
        "pool": True,
        "conn_max_age": 0,
    }
