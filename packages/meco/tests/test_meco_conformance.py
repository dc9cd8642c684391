from __future__ import annotations

import pytest

from trainforge_core.testing import check_technique


def test_meco_conformance(tmp_path) -> None:
    report = check_technique("meco", tmp_path)
    assert report is not None
    metrics = [row.metric for row in report.rows]
    assert metrics[0] == "held-out loss, no prefix (end of run)"
    assert any("right book prefix" in m for m in metrics)
    assert any("wrong book prefix" in m for m in metrics)
    tokens = next(r for r in report.rows if r.metric.startswith("training tokens"))
    assert tokens.baseline == tokens.technique  # equal tokens


def test_demo_book_urls_are_valid_hosts() -> None:
    from trainforge_core.data import kjv_documents
    from trainforge_meco import url_host
    from trainforge_meco.demo import book_url

    hosts = {url_host(book_url(d.book)) for d in kjv_documents()}
    assert len(hosts) == 66 and "1-samuel.kjv" in hosts and "song-of-solomon.kjv" in hosts


def test_lean_import_does_not_load_the_trainer() -> None:
    import subprocess
    import sys

    code = "import sys, trainforge_meco; print('transformers.trainer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_attribute() -> None:
    import trainforge_meco

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        trainforge_meco.nope  # noqa: B018
