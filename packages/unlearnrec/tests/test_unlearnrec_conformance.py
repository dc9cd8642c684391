from trainforge_core.testing import check_technique


def test_unlearnrec_conformance(tmp_path):
    check_technique("unlearnrec", tmp_path)
    # the demo saves its bar chart next to report.json
    png = tmp_path / "unlearnrec" / "unlearnrec.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
