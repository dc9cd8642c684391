"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(heading: str) -> str:
    part = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    namespace: dict = {}
    exec(compile(_snippet("## Usage"), str(README), "exec"), namespace)
    assert capsys.readouterr().out.strip() == "(568, 114)"
    assert namespace["batch"]["input_ids"].shape == (8, 512)


@pytest.mark.slow
def test_readme_integration_snippet_runs(tmp_path):
    pytest.importorskip("accelerate")
    namespace: dict = {}
    exec(compile(_snippet("## Usage"), str(README), "exec"), namespace)
    namespace["out_dir"] = str(tmp_path)
    exec(compile(_snippet("## Integration"), str(README), "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
