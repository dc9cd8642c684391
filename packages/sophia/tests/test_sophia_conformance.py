"""The package registers the `sophia` technique and its quick demo works."""

from trainforge_core.testing import check_technique


def test_sophia_conformance(tmp_path):
    report = check_technique("sophia", tmp_path)
    assert report is not None
    metrics = {row.metric for row in report.rows}
    assert "final held-out loss" in metrics
