"""The registry sees the technique and its quick demo returns a well-formed report."""

from trainforge_core.testing import check_technique


def test_sltrain_conformance(tmp_path):
    report = check_technique("sltrain", tmp_path)
    assert report is not None
    names = [row.metric for row in report.rows]
    assert "held-out loss" in names and "AdamW state" in names
    adam = next(r for r in report.rows if r.metric == "AdamW state, full-rank vs SLTrain")
    assert adam.technique < adam.baseline  # SLTrain keeps less optimizer state than dense
