from trainforge_core.testing import check_technique


def test_shiftaddvit_conformance(tmp_path):
    check_technique("shiftaddvit", tmp_path)
