"""Every Python snippet of the README runs as written (extracted from the README itself)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"
SECTIONS = ("Usage", "With the Hugging Face Trainer", "Scaling out")


def readme_block(section: str) -> str:
    text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, f"expected one python block in {section!r}, got {len(blocks)}"
    return blocks[0]


def _run(code: str, name: str, namespace: dict) -> dict:
    exec(compile(code, f"README-{name}", "exec"), namespace)
    return namespace


def test_every_python_block_of_the_readme_is_tested() -> None:
    assert len(re.findall(r"```python\n", README.read_text())) == len(SECTIONS)


def test_usage_and_trainer_snippets_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("accelerate")  # the Trainer needs it (the test group has it)
    monkeypatch.chdir(tmp_path)  # the Trainer snippet writes to "out"
    ns = _run(readme_block("Usage"), "usage", {"__name__": "__main__"})
    assert ns["batch"]["input_ids"].shape == (4, 64)
    assert ns["prompt"][0] == ns["tok"].bos_token_id
    ns = _run(readme_block("With the Hugging Face Trainer"), "trainer", ns)
    assert ns["callback"].phase_log == [(0, "metadata"), (18, "cooldown")]
    assert ns["trainer"].state.global_step == 20


def test_scaling_out_script_runs_in_one_process(capsys) -> None:
    ns = _run(readme_block("Scaling out"), "scaling-out", {"__name__": "__main__"})
    assert (ns["rank"], ns["world"]) == (0, 1)
    assert "step 15 (metadata)" in capsys.readouterr().out
    assert ns["step"] == 19 and ns["data"].step == 20
