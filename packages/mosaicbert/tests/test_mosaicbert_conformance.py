from trainforge_core.testing import check_technique


def test_mosaicbert_conformance(tmp_path):
    check_technique("mosaicbert", tmp_path)
