"""The example alert rules (deploy/prometheus-rules.yml): valid for Prometheus' own checker
and unit tests (promtool, from Debian's prometheus package, where installed), and every
metric they name is one the gateway exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from cashback import gauges

BASE = Path(__file__).resolve().parent.parent.parent
RULES = BASE / "deploy" / "prometheus-rules.yml"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus_rules_test.yml"

SUFFIXES = {
    "counter": ["_total", "_created"],
    "histogram": ["_bucket", "_count", "_sum", "_created"],
    "gauge": [""],
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("REQUIRE_PROMTOOL"):
            pytest.fail("promtool is missing and REQUIRE_PROMTOOL is set.")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 12 rules found" in done.stdout


def test_the_rules_fire_as_their_unit_tests_say() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.django_db
def test_every_metric_in_the_rules_is_exported_by_the_gateway() -> None:
    gauges.STATE.clear()
    gauges.RUNWAY.clear()
    text = Client().get("/metrics").content.decode()
    exported = set()
    for family in text_string_to_metric_families(text):
        exported.update(family.name + s for s in SUFFIXES.get(family.type, [""]))
    # Gauges with no sample yet (no merchant spends, no worker ran) still have a family.
    exported.update(re.findall(r"^# HELP (\S+)", text, flags=re.M))

    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert len(rules) == 12
    for rule in rules:
        names = set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[|\)|\s|>|<|=|$)", rule["expr"]))
        metrics = {n for n in names if n.startswith("cashback_")}
        assert metrics or rule["alert"] == "CashbackGatewayDown", rule["alert"]
        assert metrics <= exported, (rule["alert"], metrics - exported)
        assert rule["annotations"]["runbook"].startswith("docs/operations.md#")
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor == rule["alert"].lower()
