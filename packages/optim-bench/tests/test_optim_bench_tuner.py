"""CoordinateDescentTuner: reaches the grid's local optimum, deterministically, within budget."""

from __future__ import annotations

import itertools
import math

import pytest

from trainforge_optim_bench import CoordinateDescentTuner

GRID = {"lr": [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2], "wd": [0.0, 0.1, 0.2], "beta": [0.9, 0.95, 0.98]}
BASE = {"lr": 1e-3, "wd": 0.0, "beta": 0.9, "fixed": "x"}


def objective(cfg):
    # coupled, non-separable bowl in (log lr, wd, beta) with its grid minimum at (4e-3, 0.1, 0.95)
    x = math.log2(cfg["lr"] / 4e-3)
    y = (cfg["wd"] - 0.1) / 0.1
    z = (cfg["beta"] - 0.95) / 0.03
    return 3.0 + 0.02 * x * x + 0.01 * y * y + 0.01 * z * z + 0.005 * x * y


def test_finds_grid_optimum_and_is_local_optimum():
    calls = []

    def train(cfg):
        calls.append(cfg)
        assert cfg["fixed"] == "x"
        return objective(cfg)

    tuner = CoordinateDescentTuner(train, GRID, BASE, tol=1e-6)
    result = tuner.run()
    assert result.converged
    brute = min(
        (dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())),
        key=lambda c: objective({**c, "fixed": "x"}),
    )
    assert {k: result.best_config[k] for k in GRID} == brute
    for nb in tuner.neighbours(result.best_config):
        assert objective(nb) >= result.best_loss - 1e-6
    # never trains a config twice, fewer runs than the full grid
    keys = [tuple(sorted(c.items())) for c in calls]
    assert len(keys) == len(set(keys)) == result.n_runs
    assert result.n_runs < 5 * 3 * 3


def test_deterministic():
    a = CoordinateDescentTuner(objective, GRID, BASE, tol=1e-4).run()
    b = CoordinateDescentTuner(objective, GRID, BASE, tol=1e-4).run()
    assert a.history == b.history and a.best_config == b.best_config


def test_tolerance_stops_at_small_gains():
    # every move gains < tol: the tuner stays on the baseline after one sweep
    result = CoordinateDescentTuner(lambda c: 1.0 - 1e-5 * c["lr"], GRID, BASE, tol=1e-3).run()
    assert result.best_config == BASE and result.converged and result.rounds == 1


def test_diverged_runs_count_as_inf_and_budget_is_respected():
    def train(cfg):
        if cfg["lr"] >= 8e-3:
            raise FloatingPointError("loss became nan")
        return float("nan") if cfg["wd"] == 0.2 else objective(cfg)

    result = CoordinateDescentTuner(train, GRID, BASE, tol=1e-6).run()
    assert result.best_config["lr"] < 8e-3 and result.best_config["wd"] != 0.2
    assert any(math.isinf(loss) for _, loss in result.history)
    capped = CoordinateDescentTuner(objective, GRID, BASE, max_runs=4).run()
    assert capped.n_runs == 4 and not capped.converged


def test_bad_grids():
    with pytest.raises(ValueError, match="empty"):
        CoordinateDescentTuner(objective, {"lr": []}, BASE)
    with pytest.raises(ValueError, match="missing from the baseline"):
        CoordinateDescentTuner(objective, {"eps": [1e-8]}, BASE)
