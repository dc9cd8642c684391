from trainforge_core.testing import check_technique


def test_tinyfusion_conformance(tmp_path):
    check_technique("tinyfusion", tmp_path)
