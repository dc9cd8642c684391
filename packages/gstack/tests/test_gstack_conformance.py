from trainforge_core.testing import check_technique


def test_gstack_conformance(tmp_path):
    check_technique("gstack", tmp_path)
