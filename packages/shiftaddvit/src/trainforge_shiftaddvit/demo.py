"""`trainforge demo shiftaddvit`: the paper's effect in miniature on real data that ships
offline. Not written yet."""

from __future__ import annotations

from pathlib import Path

from trainforge_core.report import DemoReport
from trainforge_core.technique import Technique


def run_demo(quick: bool, out_dir: Path | None, seed: int) -> DemoReport:
    raise NotImplementedError("trainforge demo shiftaddvit is not written yet")


TECHNIQUE = Technique.from_package("trainforge_shiftaddvit", run_demo)
