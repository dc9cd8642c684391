from __future__ import annotations

from trainforge_core.testing import check_technique


def test_conformance(tmp_path):
    report = check_technique("ttm-timeseries", tmp_path)
    assert report is not None
    names = [r.metric for r in report.rows]
    assert any("zero-shot" in n for n in names) and any("few-shot" in n for n in names)
