from trainforge_core.testing import check_technique


def test_optim_bench_conformance(tmp_path):
    check_technique("optim-bench", tmp_path)
