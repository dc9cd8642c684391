"""The README's snippets run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet(section: str) -> str:
    part = README.read_text().split(section, 1)[1]
    return re.search(r"```python\n(.*?)```", part, flags=re.S).group(1)


def test_readme_usage_snippet_runs(capsys):
    exec(compile(_snippet("## Usage"), str(README), "exec"), {})
    assert capsys.readouterr().out.strip() == "torch.Size([2, 16, 128])"


@pytest.mark.slow
def test_readme_integration_snippet_runs(tmp_path):
    from transformers import AutoModelForMaskedLM

    namespace = {"out_dir": str(tmp_path)}
    exec(compile(_snippet("## Integration"), str(README), "exec"), namespace)
    assert namespace["trainer"].state.global_step == 4
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "MosaicBertForMaskedLM"
