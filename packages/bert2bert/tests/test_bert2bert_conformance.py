from trainforge_core.testing import check_technique


def test_bert2bert_conformance(tmp_path):
    check_technique("bert2bert", tmp_path)
