"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(f"## {section}", 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("Usage"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "True"


def test_readme_integration_snippet_runs(capsys):
    ns: dict = {}
    exec(compile(_snippet("Integration"), str(README), "exec"), ns)
    assert capsys.readouterr().out.strip() == "True torch.Size([8])"
    assert ns["basis"].split == "topo"
