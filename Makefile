# The two commands that matter: `make run` and `make test`. Everything is installed into
# .venv from the lock file (uv.lock); nothing needs to be installed by hand.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
PG_URL ?= postgres://postgres@127.0.0.1:5432/cashback_gateway
PYTEST_WORKERS ?= 2

# Tests run against the sandbox upstream (each test starts its own on a free port).
TEST_ENV := SECRET_KEY=test-only-secret-key-0123456789abcdefghijklmnop \
	CASHBACK_SANDBOX=on API_THROTTLE_RATE=off API_IP_THROTTLE_RATE=off \
	WEBHOOK_ALLOW_PRIVATE=on SECURE_COOKIES=off LOG_LEVEL=WARNING DEBUG=off ADMIN_REQUIRE_2FA=off

.PHONY: install run test test-sqlite test-postgres lint bench audit clean

$(VENV)/.synced: pyproject.toml uv.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv sync --frozen --inexact --python $(PY) -q
	touch $@

install: $(VENV)/.synced

run: install
	$(PY) scripts/bootstrap_env.py
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py setup_demo
	@# Metrics (docs/operations.md): each process type writes its samples under .metrics/,
	@# emptied here because prometheus-client's multiprocess mode needs a clean start.
	rm -rf .metrics && mkdir -p .metrics/web .metrics/worker
	@if $(PY) -c 'import sys; from pathlib import Path; import environ; e = environ.Env(); e.read_env(Path(".env")); sys.exit(0 if e.bool("CASHBACK_SANDBOX", default=False) else 1)'; then \
		echo "  SANDBOX mode: starting the local sandbox upstream on 127.0.0.1:8900"; \
		$(VENV)/bin/honcho start web worker sandbox; \
	else \
		$(VENV)/bin/honcho start web worker; \
	fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(TEST_ENV) $(VENV)/bin/mypy gateway merchants cashback audit monitoring accounts
	$(VENV)/bin/lint-imports --no-cache

test: install lint test-sqlite test-postgres

test-sqlite: install
	$(TEST_ENV) DATABASE_URL=sqlite:///$(CURDIR)/.test-db.sqlite3 $(PY) -m pytest -n $(PYTEST_WORKERS) -q

test-postgres: install
	@if $(PY) -c 'import psycopg; psycopg.connect("$(PG_URL)".rsplit("/", 1)[0] + "/postgres", connect_timeout=3).close()' 2>/dev/null; then \
		$(TEST_ENV) DATABASE_URL=$(PG_URL) $(PY) -m pytest -n $(PYTEST_WORKERS) -q; \
	elif [ -n "$$REQUIRE_POSTGRES" ]; then \
		echo "PostgreSQL does not answer at $(PG_URL), and REQUIRE_POSTGRES is set."; exit 1; \
	else \
		echo "PostgreSQL does not answer at $(PG_URL): skipped the PostgreSQL run."; \
	fi

# PostgreSQL must be up (BENCH_DATABASE_URL, default .../cashback_bench). Memory mode:
# make bench BENCH_ARGS="--memory 100000"
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# Audits every locked package (hashed, so pip-audit needs no resolver). --strict fails when a
# package could not be looked up, so an unreachable vulnerability database is never "clean".
audit: install
	$(VENV)/bin/uv export --frozen --format requirements-txt -q > .audit-requirements.txt
	$(VENV)/bin/pip-audit -r .audit-requirements.txt --disable-pip --strict; status=$$?; rm -f .audit-requirements.txt; exit $$status

clean:
	rm -rf $(VENV) staticfiles .test-db*.sqlite3
