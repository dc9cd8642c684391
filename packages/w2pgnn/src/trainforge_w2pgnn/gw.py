"""Gromov-Wasserstein distances between graphons.

* :func:`gw_distance`: the exact (conditional-gradient) GW discrepancy of POT with uniform
  measures, square-rooted, as ``caoyxuan/W2PGNN:utils/simulator.py:gw_distance`` (which uses
  ``loss_fun="kl_loss"``; ``"square_loss"`` is the symmetric alternative).
* :func:`entropic_gw`: the differentiable entropic GW loss used to fit the mixture weights,
  a torch re-implementation of ``caoyxuan/W2PGNN:utils/other_gw.py`` (projected-gradient
  entropic GW of Peyre et al. 2016 with a log-domain Sinkhorn). Gradients flow through the
  unrolled solver, as in the reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["GW_LOSSES", "entropic_gw", "gw_distance"]

GW_LOSSES = ("kl_loss", "square_loss")


def _as_square(x: object, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a square torch.Tensor or numpy array, got {type(x)}")
    if x.ndim != 2 or x.shape[0] != x.shape[1] or x.shape[0] < 1:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {x.shape}")
    arr = np.asarray(x, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite entries")
    return arr


def gw_distance(
    w1: torch.Tensor | np.ndarray,
    w2: torch.Tensor | np.ndarray,
    loss: str = "kl_loss",
    max_iter: int = 10_000,
) -> float:
    """``sqrt(GW_2)`` between two discretised graphons with uniform node measures.

    ``loss="kl_loss"`` is the reference's choice (simulator.py); its GW is not symmetric.
    """
    import ot

    if loss not in GW_LOSSES:
        raise ValueError(f"loss must be one of {GW_LOSSES}, got {loss!r}")
    a = _as_square(w1, "w1")
    b = _as_square(w2, "w2")
    p = np.full(a.shape[0], 1.0 / a.shape[0])
    q = np.full(b.shape[0], 1.0 / b.shape[0])
    d2 = ot.gromov.gromov_wasserstein2(a, b, p, q, loss, armijo=False, max_iter=max_iter)
    d2 = float(d2)
    if not math.isfinite(d2):
        raise FloatingPointError(f"GW solver returned {d2} (loss={loss})")
    # The CG solver can stop a hair below zero on identical inputs; GW_2 >= 0.
    return math.sqrt(max(d2, 0.0))


def _sinkhorn_log(
    p: torch.Tensor,
    q: torch.Tensor,
    cost: torch.Tensor,
    epsilon: float,
    threshold: float,
    max_iter: int,
) -> torch.Tensor:
    # other_gw.py:sinkhorn: potentials in cost units, f <- f + eps (log p - LSE((-C+f+g)/eps)),
    # stop when the summed absolute change of both potentials is below `threshold`.
    log_p = torch.log(p + 1e-8)
    log_q = torch.log(q + 1e-8)
    u = torch.zeros_like(p)
    v = torch.zeros_like(q)
    for _ in range(max_iter):
        u0, v0 = u, v
        k = (-cost + u[:, None] + v[None, :]) / epsilon
        u = epsilon * (log_p - torch.logsumexp(k, dim=1)) + u
        k = (-cost + u[:, None] + v[None, :]) / epsilon
        v = epsilon * (log_q - torch.logsumexp(k, dim=0)) + v
        diff = (u - u0).abs().sum() + (v - v0).abs().sum()
        if diff.item() < threshold:
            break
    return torch.exp((-cost + u[:, None] + v[None, :]) / epsilon)


def entropic_gw(
    c1: torch.Tensor,
    c2: torch.Tensor,
    epsilon: float = 1e-5,
    max_iter: int = 100,
    tol: float = 1e-6,
    sinkhorn_threshold: float = 0.1,
    sinkhorn_max_iter: int = 100,
) -> torch.Tensor:
    """Entropic GW loss (square loss, uniform measures) between ``c1`` and ``c2``; differentiable.

    Defaults are the reference's: ``epsilon=1e-5``, ``max_iter=100`` outer iterations with the
    error checked every 10th, ``tol=1e-6`` (other_gw.py:entropic_gw /
    entropic_gromov_wasserstein) and the Sinkhorn's threshold 0.1 and 100 iterations
    (other_gw.py:sinkhorn). The loss is ``sum(L(C1, C2) (x) T * T)`` with
    ``L(a, b) = (a - b)^2 / 2``.
    """
    for name, c in (("c1", c1), ("c2", c2)):
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(c).__name__}")
        if c.dim() != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 1:
            raise ValueError(f"{name} must be a square 2-D tensor, got shape {tuple(c.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    dtype = c1.dtype if c1.dtype.is_floating_point else torch.float64
    c2 = c2.to(device=c1.device, dtype=dtype)
    c1 = c1.to(dtype)
    t, const = _entropic_plan(
        c1, c2, epsilon, max_iter, tol, sinkhorn_threshold, sinkhorn_max_iter, return_const=True
    )
    return ((const - c1 @ t @ c2.T) * t).sum()


def _entropic_plan(
    c1: torch.Tensor,
    c2: torch.Tensor,
    epsilon: float = 1e-5,
    max_iter: int = 100,
    tol: float = 1e-6,
    sinkhorn_threshold: float = 0.1,
    sinkhorn_max_iter: int = 100,
    return_const: bool = False,
):  # type: ignore[no-untyped-def]
    n, m = c1.shape[0], c2.shape[0]
    p = torch.full((n,), 1.0 / n, dtype=c1.dtype, device=c1.device)
    q = torch.full((m,), 1.0 / m, dtype=c1.dtype, device=c1.device)
    # other_gw.py:init_matrix with f1(a)=a^2/2, f2(b)=b^2/2, h1=h2=identity.
    const = ((c1**2 / 2) @ p)[:, None] + ((c2**2 / 2) @ q)[None, :]
    t = p[:, None] * q[None, :]
    err = 1.0
    it = 0
    while err > tol and it < max_iter:
        t_prev = t
        grad = 2 * (const - c1 @ t @ c2.T)  # other_gw.py:gwggrad
        t = _sinkhorn_log(p, q, grad, epsilon, sinkhorn_threshold, sinkhorn_max_iter)
        if it % 10 == 0:
            err = torch.linalg.norm(t - t_prev).item()
        it += 1
    return (t, const) if return_const else t


def _lse_softmax(k: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    # logsumexp along `dim` and the matching softmax, from one exp (torch.logsumexp's
    # max-shifted algorithm).
    m = k.amax(dim=dim, keepdim=True)
    e = torch.exp(k - m)
    s = e.sum(dim=dim, keepdim=True)
    return (m + torch.log(s)).squeeze(dim), e / s


def entropic_gw_jvp(
    c1: torch.Tensor,
    c2: torch.Tensor,
    directions: torch.Tensor,
    epsilon: float = 1e-5,
    max_iter: int = 100,
    tol: float = 1e-6,
    sinkhorn_threshold: float = 0.1,
    sinkhorn_max_iter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`entropic_gw` and its directional derivatives along ``directions`` (``(K, n, n)``
    perturbations of ``c1``), by forward-mode differentiation of the same unrolled solver.

    The derivative is the one autograd gets by backpropagating through every Sinkhorn and
    outer iteration (the reference's gradient), computed in the forward pass: each iteration
    carries ``K`` tangents (the potentials' and the plan's) next to its values, so no graph is
    recorded and the tangents of all ``K`` directions share each batched op. Mixture fits
    need the derivative along each basis graphon only (``K <= 5`` in the paper), where this
    is cheaper than reverse mode. Returns ``(loss, dloss)`` with ``dloss`` of shape ``(K,)``.
    """
    n, m = c1.shape[0], c2.shape[0]
    kdir = directions.shape[0]
    dt = c1.dtype
    p = torch.full((n,), 1.0 / n, dtype=dt, device=c1.device)
    q = torch.full((m,), 1.0 / m, dtype=dt, device=c1.device)
    log_p = torch.log(p + 1e-8)
    log_q = torch.log(q + 1e-8)
    c2t = c2.T
    const = ((c1**2 / 2) @ p)[:, None] + ((c2**2 / 2) @ q)[None, :]
    dconst = ((c1 * directions) @ p)[:, :, None]  # (K, n, 1)
    t = p[:, None] * q[None, :]
    dtan = torch.zeros((kdir, n, m), dtype=dt, device=c1.device)
    err, it = 1.0, 0
    while err > tol and it < max_iter:
        t_prev = t
        grad = 2 * (const - c1 @ t @ c2t)
        dgrad = 2 * (dconst - (directions @ t + c1 @ dtan) @ c2t)
        u = torch.zeros_like(p)
        v = torch.zeros_like(q)
        du = torch.zeros((kdir, n), dtype=dt, device=c1.device)
        dv = torch.zeros((kdir, m), dtype=dt, device=c1.device)
        for _ in range(sinkhorn_max_iter):
            u0, v0 = u, v
            lse, soft = _lse_softmax((-grad + u[:, None] + v[None, :]) / epsilon, 1)
            u = epsilon * (log_p - lse) + u
            # d(eps * lse_i) = sum_j P_ij (-dG_ij + du_i + dv_j), rows of P summing to 1.
            du = (soft * dgrad).sum(-1) - dv @ soft.T
            lse, soft = _lse_softmax((-grad + u[:, None] + v[None, :]) / epsilon, 0)
            v = epsilon * (log_q - lse) + v
            dv = (soft * dgrad).sum(-2) - du @ soft
            if ((u - u0).abs().sum() + (v - v0).abs().sum()).item() < sinkhorn_threshold:
                break
        t = torch.exp((-grad + u[:, None] + v[None, :]) / epsilon)
        dtan = t * (-dgrad + du[:, :, None] + dv[:, None, :]) / epsilon
        if it % 10 == 0:
            err = torch.linalg.norm(t - t_prev).item()
        it += 1
    resid = const - c1 @ t @ c2t
    dresid = dconst - (directions @ t + c1 @ dtan) @ c2t
    loss = (resid * t).sum()
    dloss = (dresid * t).sum((-2, -1)) + (resid * dtan).sum((-2, -1))
    return loss, dloss
