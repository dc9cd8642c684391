from trainforge_core.testing import check_technique


def test_ul2_conformance(tmp_path):
    check_technique("ul2", tmp_path)
