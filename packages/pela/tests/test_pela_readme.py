"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(f"## {section}", 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    namespace: dict = {}
    exec(compile(_snippet("Usage"), str(README), "exec"), namespace)
    printed = capsys.readouterr().out.strip()
    claimed = re.search(r"prints `(.*?)`", README.read_text().split("## Usage", 1)[1]).group(1)
    assert printed == claimed
    assert not namespace["report"].layers[0].name.startswith("head")
    assert namespace["result"].steps == 3


def test_readme_integration_snippet_runs(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    teacher = transformers.BertForSequenceClassification(cfg).eval()
    data = [
        {"input_ids": torch.randint(0, 64, (8,)), "labels": torch.tensor(i % 2)} for i in range(8)
    ]
    namespace = {"teacher": teacher, "train_dataset": data}
    exec(compile(_snippet("Integration"), str(README), "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
