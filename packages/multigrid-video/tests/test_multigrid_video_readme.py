"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(heading: str) -> str:
    part = README.read_text().split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns: dict = {}
        exec(compile(_snippet("## Usage"), str(README), "exec"), ns)
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip() == "358 [73, 110, 142, 158] (512, 8, 158)"
    assert not ns["model"].training
    assert ns["lr"].epoch > ns["sched"].max_epoch - 1


def test_readme_integration_snippet_runs():
    pytest.importorskip("timm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ns: dict = {}
        exec(compile(_snippet("## Integration"), str(README), "exec"), ns)
    finally:
        torch.set_num_threads(threads)
    assert ns["crops"][0] == 112
