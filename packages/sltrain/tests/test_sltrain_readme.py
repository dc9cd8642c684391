"""The README's snippets run as written (the integration one in a temporary working
directory, since it writes checkpoints relative to it)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from trainforge_sltrain import SLTrainLinear

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(section, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def _run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    return namespace


def test_readme_usage_snippet_runs(capsys):
    ns = _run(_snippet("## Usage"))
    assert capsys.readouterr().out.startswith("SLTrain replaced 14 linear layers")
    assert ns["layer"].lora_B.grad is not None
    left = [m for m in ns["model"].modules() if isinstance(m, SLTrainLinear)]
    assert not left and isinstance(ns["model"].model.layers[0].mlp.down_proj, nn.Linear)


def test_readme_integration_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = _run(_snippet("## Integration"))
    ids = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    expected = ns["model"](input_ids=ids).logits
    for name in ("rebuilt", "fresh"):
        got = ns[name](input_ids=ids).logits
        assert torch.allclose(got, expected, atol=1e-6), name
    assert isinstance(ns["fresh"].model.layers[0].self_attn.q_proj, SLTrainLinear)
