"""Helpers for package tests, including the conformance check every technique runs."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from trainforge_core.registry import get_technique
from trainforge_core.report import DemoReport
from trainforge_core.technique import Technique

log = logging.getLogger(__name__)


def check_technique(slug: str, tmp_dir: str | Path, *, run_demo: bool = True) -> DemoReport | None:
    """Assert that ``slug`` is registered with complete metadata and that its quick demo
    returns a well-formed report (finite numbers, JSON saved). The demo's time is logged and
    stored in ``report.details["quick_demo_seconds"]``, never asserted (a loaded machine is
    slower; budgets are reported, see the nox session-time table).

    Raises AssertionError with a message that says which requirement failed.
    """
    technique = get_technique(slug)
    assert isinstance(technique, Technique)
    assert technique.version != "unknown", (
        f"{slug}: distribution {technique.distribution!r} is not installed"
    )
    assert technique.paper.title and technique.paper.authors, f"{slug}: paper metadata incomplete"
    if not run_demo:
        return None
    out = Path(tmp_dir) / slug
    start = time.perf_counter()
    report = technique.run_demo(quick=True, out_dir=out, seed=0)
    elapsed = time.perf_counter() - start
    log.info("%s: quick demo took %.1fs", slug, elapsed)
    report.details["quick_demo_seconds"] = round(elapsed, 2)
    assert report.slug == slug, f"{slug}: report.slug is {report.slug!r}"
    assert report.claim, f"{slug}: report has no claim"
    assert report.rows, f"{slug}: report has no rows"
    for row in report.rows:
        for value in (row.baseline, row.technique):
            assert value is None or math.isfinite(value), f"{slug}: {row.metric} is {value}"
    saved = json.loads((out / "report.json").read_text())
    assert saved["slug"] == slug and len(saved["rows"]) == len(report.rows)
    assert str(report).startswith(f"trainforge demo {slug}")
    return report
