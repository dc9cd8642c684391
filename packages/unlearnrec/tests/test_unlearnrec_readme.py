"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(section, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("## Usage"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([5])"


def test_readme_integration_snippet_runs(capsys):
    exec(compile(_snippet("## Integration"), str(README), "exec"), {})
    out = capsys.readouterr().out.strip()
    assert out.endswith("torch.Size([140, 16])") and int(out.split()[0]) > 0
