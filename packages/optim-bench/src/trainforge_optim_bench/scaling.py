"""The paper's speed-up estimate and hyper-parameter scaling laws.

Speed-up (``marin-community/marin:experiments/optimizer_sweep/Analysis/PhaseII/
speedup_estimation.py``): for one model size fit AdamW's final losses against data,
``L(D) = alpha * D^(-B) + beta`` (``scipy.optimize.curve_fit``, start
``[L_first - L_last, 0.5, L_last]``). Another optimiser's loss ``L_o`` at data ``D`` is worth
``D_eff = ((L_o - beta) / alpha)^(-1/B)`` of AdamW data; the speed-up is ``D_eff / D``.

Hyper-parameter laws (Phase III): ``h(N, D) = a * N^b * D^c``, fitted by least squares in
log space, to extrapolate a tuned knob to a larger model or budget.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


def _finite_positive(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got {values!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must hold positive finite numbers, got {values!r}")
    return arr


@dataclass(frozen=True)
class DataLaw:
    """``L(D) = alpha * D^(-B) + beta``: final loss against data (any unit, e.g. x Chinchilla)."""

    alpha: float
    B: float
    beta: float

    def __call__(self, data: float) -> float:
        if not (isinstance(data, int | float) and data > 0):
            raise ValueError(f"data must be a positive number, got {data!r}")
        return self.alpha * data ** (-self.B) + self.beta

    def effective_data(self, loss: float) -> float:
        """The data AdamW needs to reach ``loss`` (inf when ``loss`` is at or below beta)."""
        if not (isinstance(loss, int | float) and math.isfinite(loss)):
            raise ValueError(f"loss must be a finite number, got {loss!r}")
        gap = (loss - self.beta) / self.alpha
        if gap <= 0:
            log.warning("loss %.4f is at or below the fitted asymptote %.4f", loss, self.beta)
            return math.inf
        return gap ** (-1.0 / self.B)


def fit_data_law(data: Sequence[float], losses: Sequence[float]) -> DataLaw:
    """Fit :class:`DataLaw` to AdamW's final ``losses`` at ``data`` (three points or more)."""
    from scipy.optimize import curve_fit

    d = _finite_positive("data", data)
    loss = _finite_positive("losses", losses)
    if d.size != loss.size:
        raise ValueError(f"data has {d.size} points but losses has {loss.size}")
    if d.size < 3:
        raise ValueError(f"fitting alpha, B and beta needs at least 3 points, got {d.size}")
    if np.unique(d).size != d.size:
        raise ValueError(f"data values must be distinct, got {list(d)}")
    order = np.argsort(d)
    d, loss = d[order], loss[order]

    def model(x: np.ndarray, alpha: float, b: float, beta: float) -> np.ndarray:
        return alpha * x ** (-b) + beta

    p0 = [loss[0] - loss[-1], 0.5, loss[-1]]
    params, _ = curve_fit(model, d, loss, p0=p0, maxfev=10000)
    law = DataLaw(*(float(v) for v in params))
    log.info("fit_data_law: %s", law)
    return law


def effective_data(law: DataLaw, loss: float) -> float:
    """``law.effective_data(loss)``."""
    if not isinstance(law, DataLaw):
        raise TypeError(f"law must be a DataLaw, got {type(law).__name__}")
    return law.effective_data(loss)


def speedup(law: DataLaw, data: float, loss: float) -> float:
    """How many times AdamW's data an optimiser reaching ``loss`` at ``data`` is worth."""
    if not isinstance(law, DataLaw):
        raise TypeError(f"law must be a DataLaw, got {type(law).__name__}")
    if not (isinstance(data, int | float) and math.isfinite(data) and data > 0):
        raise ValueError(f"data must be a positive finite number, got {data!r}")
    return law.effective_data(loss) / data


@dataclass(frozen=True)
class ScalingLawHparams:
    """``h(N, D) = a * N^b * D^c`` for one hyper-parameter (Phase III extrapolation)."""

    a: float
    b: float
    c: float

    @classmethod
    def fit(
        cls, n_params: Sequence[float], data: Sequence[float], values: Sequence[float]
    ) -> ScalingLawHparams:
        """Least squares of ``log h`` on ``log N`` and ``log D`` (needs 3+ points that
        vary in both N and D)."""
        n = np.log(_finite_positive("n_params", n_params))
        d = np.log(_finite_positive("data", data))
        h = np.log(_finite_positive("values", values))
        if not n.size == d.size == h.size:
            raise ValueError(
                f"n_params, data and values differ in length: {n.size}, {d.size}, {h.size}"
            )
        design = np.stack([np.ones_like(n), n, d], axis=1)
        if n.size < 3 or np.linalg.matrix_rank(design) < 3:
            raise ValueError("need at least 3 points that vary in both n_params and data")
        coef, *_ = np.linalg.lstsq(design, h, rcond=None)
        return cls(float(math.exp(coef[0])), float(coef[1]), float(coef[2]))

    def __call__(self, n_params: float, data: float) -> float:
        if not (n_params > 0 and data > 0):
            raise ValueError(f"n_params and data must be positive, got {n_params!r}, {data!r}")
        return self.a * n_params**self.b * data**self.c
