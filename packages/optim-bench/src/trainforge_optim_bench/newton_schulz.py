"""Newton-Schulz orthogonalisation: the in-package reference for Muon's update.

Five quintic iterations X <- aX + (bA + cA^2)X with A = XX^T on X = G/||G||_F (transposed
when G has more rows than columns), coefficients (3.4445, -4.7750, 2.0315). The iteration
drives every singular value of the normalised matrix towards ~1 (into roughly [0.7, 1.2]:
the coefficients maximise the slope at zero rather than converge exactly), so the output
approximates the polar factor U V^T of G = U S V^T.

Sources: ``stanford-crfm/levanter:src/levanter/optim/muon.py`` (``zeropower_via_newtonschulz5``,
what the paper ran) and the spec's section 15. ``torch.optim.Muon`` runs the same iteration
in bfloat16; this reference runs in the input's dtype (or ``dtype``) so tests can compare
against float64 maths.
"""

from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(
    grad: torch.Tensor,
    steps: int = 5,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = 1e-7,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Approximately orthogonalise a 2-D ``grad`` with ``steps`` quintic Newton-Schulz steps.

    Returns a tensor of ``grad``'s shape and dtype. ``dtype`` is the working precision
    (default: ``grad``'s; ``torch.bfloat16`` reproduces ``torch.optim.Muon``).
    """
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"grad must be a torch.Tensor, got {type(grad).__name__}")
    if grad.ndim != 2:
        raise ValueError(f"grad must be 2-D, got shape {tuple(grad.shape)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if len(coefficients) != 3:
        raise ValueError(f"coefficients must be three numbers (a, b, c), got {coefficients!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps!r}")
    a, b, c = (float(v) for v in coefficients)
    x = grad.to(dtype or grad.dtype, copy=True)
    transpose = x.shape[0] > x.shape[1]
    if transpose:
        x = x.T.contiguous()  # wide, so the Gram matrix is the small side
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        # b A + c A A and a X + P X, each one GEMM call with the scaled sum folded in
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    if transpose:
        x = x.T
    return x.to(grad.dtype)


def newton_schulz_flops(rows: int, cols: int, steps: int = 5) -> int:
    """Multiply-add FLOPs (2 per MAC) of :func:`newton_schulz5` on a ``rows x cols`` matrix.

    Per step with m = min, n = max: X X^T (2 m^2 n), A A (2 m^3), (bA + cA^2) X (2 m^2 n).
    """
    for name, value in (("rows", rows), ("cols", cols), ("steps", steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m**3)
