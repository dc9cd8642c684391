"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(heading: str) -> str:
    part = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("## Usage"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([1, 36, 64]) 20"


def test_readme_integration_snippet_runs():
    ns: dict = {}
    exec(compile(_snippet("## Usage"), str(README), "exec"), ns)
    exec(compile(_snippet("## Integration"), str(README), "exec"), ns)
    assert ns["loss"].item() > 0
    assert ns["ps3"].selection_feature_proj.fc1.weight.grad is not None
