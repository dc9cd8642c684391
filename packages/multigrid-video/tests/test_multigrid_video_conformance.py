from trainforge_core.testing import check_technique


def test_multigrid_video_conformance(tmp_path):
    check_technique("multigrid-video", tmp_path)
