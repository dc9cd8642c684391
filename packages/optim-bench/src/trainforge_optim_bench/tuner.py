"""`CoordinateDescentTuner`: the paper's Phase I tuning loop.

From a baseline configuration, run every single-knob change over the grid (one axis at a
time, all other knobs at the current best); move to the best of them when it lowers the
*final* loss by more than ``tol``; repeat around the new point until no single-knob change
does. This is ``marin-community/marin:marin/optimizer_sweep/template.py`` (with
``utils.create_configs``: baseline + one-knob neighbours; the sweep ends when the current
best config's whole neighbourhood has run and none beats it by more than the threshold,
3e-3 there). Runs are cached by configuration, so a config is never trained twice;
diverged runs (non-finite loss, or ``FloatingPointError``) count as ``inf``.
Deterministic: axes and values are visited in the grid's order and ties keep the earlier.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

TrainFn = Callable[[dict[str, Any]], float]


@dataclass
class TuneResult:
    """The tuner's outcome: the best configuration, its loss and every run, in order."""

    best_config: dict[str, Any]
    best_loss: float
    history: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    rounds: int = 0
    converged: bool = False

    @property
    def n_runs(self) -> int:
        return len(self.history)


def _key(config: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in config.items()))


class CoordinateDescentTuner:
    """Coordinate sweeps around the current best until no single-knob change helps.

    ``train_fn(config) -> final loss``; ``grid`` maps each knob to its values;
    ``baseline`` holds every knob of the grid (and any fixed ones). ``max_runs`` caps the
    number of training runs (``None``: no cap); when it is reached the result says
    ``converged=False``.
    """

    def __init__(
        self,
        train_fn: TrainFn,
        grid: Mapping[str, Sequence[Any]],
        baseline: Mapping[str, Any],
        tol: float = 1e-3,
        max_runs: int | None = None,
        max_rounds: int = 100,
    ) -> None:
        if not callable(train_fn):
            raise TypeError(f"train_fn must be callable, got {type(train_fn).__name__}")
        if not isinstance(grid, Mapping) or not grid:
            raise ValueError(f"grid must be a non-empty mapping of knob -> values, got {grid!r}")
        if not isinstance(baseline, Mapping):
            raise TypeError(f"baseline must be a mapping, got {type(baseline).__name__}")
        for knob, values in grid.items():
            if isinstance(values, str) or not isinstance(values, Sequence):
                raise TypeError(f"grid[{knob!r}] must be a sequence of values, got {values!r}")
            if len(values) == 0:
                raise ValueError(f"grid[{knob!r}] is empty; every axis needs at least one value")
            if knob not in baseline:
                raise ValueError(
                    f"grid axis {knob!r} is missing from the baseline {dict(baseline)}"
                )
        if not (isinstance(tol, int | float) and math.isfinite(tol) and tol >= 0):
            raise ValueError(f"tol must be a non-negative finite number, got {tol!r}")
        if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 1):
            raise ValueError(f"max_runs must be a positive integer or None, got {max_runs!r}")
        if not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be a positive integer, got {max_rounds!r}")
        self.train_fn = train_fn
        self.grid = {k: list(v) for k, v in grid.items()}
        self.baseline = dict(baseline)
        self.tol = float(tol)
        self.max_runs = max_runs
        self.max_rounds = max_rounds
        self._cache: dict[tuple, float] = {}
        self._history: list[tuple[dict[str, Any], float]] = []

    def neighbours(self, config: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every configuration one knob away from ``config`` on the grid (grid order)."""
        out = []
        for knob, values in self.grid.items():
            for value in values:
                if value != config[knob]:
                    out.append({**config, knob: value})
        return out

    def _budget_left(self) -> bool:
        return self.max_runs is None or len(self._history) < self.max_runs

    def evaluate(self, config: Mapping[str, Any]) -> float:
        """The final loss of ``config`` (trained once, then cached)."""
        key = _key(config)
        if key in self._cache:
            return self._cache[key]
        try:
            loss = float(self.train_fn(dict(config)))
        except FloatingPointError as exc:
            log.info("run diverged (%s): %s", exc, dict(config))
            loss = math.inf
        if math.isnan(loss):
            loss = math.inf
        self._cache[key] = loss
        self._history.append((dict(config), loss))
        log.info("run %d: loss %.4f %s", len(self._history), loss, dict(config))
        return loss

    def run(self) -> TuneResult:
        """Tune from the baseline; return the best configuration found."""
        current = dict(self.baseline)
        current_loss = self.evaluate(current)
        converged = False
        rounds = 0
        while rounds < self.max_rounds:
            rounds += 1
            best, best_loss = current, current_loss
            for candidate in self.neighbours(current):
                if not self._budget_left() and _key(candidate) not in self._cache:
                    break
                loss = self.evaluate(candidate)
                if loss < best_loss:
                    best, best_loss = candidate, loss
            else:
                if best_loss < current_loss - self.tol:
                    current, current_loss = best, best_loss
                    continue
                converged = True
                break
            # budget exhausted mid-sweep: keep the best seen so far
            if best_loss < current_loss - self.tol:
                current, current_loss = best, best_loss
            break
        return TuneResult(current, current_loss, list(self._history), rounds, converged)
