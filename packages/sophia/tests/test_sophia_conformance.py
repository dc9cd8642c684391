"""The package registers the `sophia` technique and its quick demo works."""

import torch

from trainforge_core.testing import check_technique


def test_sophia_conformance(tmp_path):
    # The quick demo's ops are tiny: one thread loses little on an idle machine and avoids
    # OpenMP barrier stalls on a shared, oversubscribed one (CI boxes are often both).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = check_technique("sophia", tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert report is not None
    metrics = {row.metric for row in report.rows}
    assert "final held-out loss" in metrics
