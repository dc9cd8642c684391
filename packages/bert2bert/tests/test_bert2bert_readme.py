"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import transformers

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(f"## {section}", 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_snippet("Usage"), str(README), "exec"), namespace)
    assert capsys.readouterr().out.startswith("bert2bert aki: layers 2->4")
    loaded = transformers.BertForMaskedLM.from_pretrained(tmp_path / "grown-bert")
    assert loaded.config.num_hidden_layers == 4 and loaded.config.hidden_size == 64


def test_readme_integration_snippet_runs():
    cfg = transformers.BertConfig(
        vocab_size=100,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
    )
    namespace = {
        "small": transformers.BertForMaskedLM(cfg),
        "big_config": transformers.BertConfig(
            vocab_size=100,
            num_hidden_layers=4,
            hidden_size=64,
            num_attention_heads=4,
            intermediate_size=128,
        ),
    }
    exec(compile(_snippet("Integration"), str(README), "exec"), namespace)
    assert namespace["callback"].block == 2 and namespace["big"].config.num_hidden_layers == 4
