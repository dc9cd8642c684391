from trainforge_core.testing import check_technique


def test_pela_conformance(tmp_path):
    check_technique("pela", tmp_path)
