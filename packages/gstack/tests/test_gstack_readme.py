"""The README's usage snippet runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_snippet_runs(capsys):
    text = README.read_text()
    usage = text.split("## Usage", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", usage, flags=re.S).group(1)
    exec(compile(snippet, str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "1.11e+10"


def test_readme_integration_snippet_runs():
    text = README.read_text()
    part = text.split("## Integration", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)
    from trainforge_core.models import tiny_llama

    namespace = {"small": tiny_llama(num_layers=1, hidden_size=32, num_heads=4, vocab_size=64)}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert namespace["big"].config.num_hidden_layers == 4


def test_readme_recipe_snippet_runs(capsys):
    text = README.read_text()
    part = text.split("## The two stages in one call", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert capsys.readouterr().out.strip() == "20 40 20"
    assert namespace["no_skip"].skip_seen_data is False
