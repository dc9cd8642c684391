"""The README's usage snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path


def test_readme_usage_snippet_runs(capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", text, flags=re.S)
    assert snippet is not None
    exec(compile(snippet.group(1), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "torch.Size([4, 96, 5])" in out and out.splitlines()[-1].startswith("5 ")
