"""Fixtures of the operations tests: a cluster of real processes, logs printed on failure."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.multihost.cluster import Cluster


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Processes killed at the end of the test, their logs printed if it failed."""
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(logs, {})
    try:
        yield c
    finally:
        c.kill_all()
        report = getattr(request.node, "report_call", None)
        if report is None or report.failed:
            c.dump_logs()
