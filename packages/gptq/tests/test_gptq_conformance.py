from trainforge_core.testing import check_technique


def test_conformance(tmp_path):
    check_technique("gptq", tmp_path)
