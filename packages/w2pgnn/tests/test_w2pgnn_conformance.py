from trainforge_core.testing import check_technique


def test_w2pgnn_conformance(tmp_path):
    check_technique("w2pgnn", tmp_path)
