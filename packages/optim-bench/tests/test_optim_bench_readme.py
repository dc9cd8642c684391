"""The README's usage and integration snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(f"## {section}", 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("Usage"), str(README), "exec"), {})
    out = capsys.readouterr().out.strip()
    assert out == "{'lr': 0.016, 'weight_decay': 0.1} 1.41"


def test_readme_integration_snippet_runs():
    from trainforge_core.models import tiny_llama

    namespace = {"model": tiny_llama(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4)}
    exec(compile(_snippet("Integration"), str(README), "exec"), namespace)
    assert namespace["sched"].total_steps == 1000
