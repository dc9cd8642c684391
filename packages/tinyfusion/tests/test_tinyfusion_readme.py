"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str, index: int = 0) -> str:
    part = README.read_text().split(section, 1)[1]
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)[index]


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("## Usage"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "2 2"


def test_readme_integration_snippet_runs():
    pytest.importorskip("transformers")
    ns: dict = {}
    exec(compile(_snippet("## Integration"), str(README), "exec"), ns)
    assert ns["pruned"].config.num_hidden_layers == 2
    assert len(ns["pruned"].model.layers) == 2


def test_readme_rloo_snippet_runs(capsys):
    exec(compile(_snippet("## Hyper-parameters"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "learned (lora, rloo)"
