from trainforge_core.testing import check_technique


def test_ps3_vision_conformance(tmp_path):
    check_technique("ps3-vision", tmp_path)
