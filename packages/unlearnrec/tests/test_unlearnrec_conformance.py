from trainforge_core.testing import check_technique


def test_unlearnrec_conformance(tmp_path):
    check_technique("unlearnrec", tmp_path)
