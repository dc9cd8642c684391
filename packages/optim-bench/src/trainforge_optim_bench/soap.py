"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024), in-package.

Per parameter of dimension k: Shampoo statistics ``L_i <- b_s L_i + (1 - b_s) G_(i) G_(i)^T``
(one per dimension no larger than ``max_precond_dim``), eigenbases ``Q_i`` from ``eigh`` at
the first step and refreshed every ``precondition_frequency`` steps by one power-iteration
step and a QR decomposition (re-sorting the rotated second moment to the new eigenvalue
order). Adam runs in the rotated space: the first moment is kept in the original space and
rotated each step, the second moment on the rotated gradient squared; the normalised update
is rotated back. 1-D parameters and dimensions above ``max_precond_dim`` stay unrotated
(plain Adam there). Decoupled weight decay after the update.

Conventions follow the authors' reference (the paper ran Levanter's port,
``stanford-crfm/levanter:src/levanter/optim/soap.py``): the first step only initialises the
statistics and bases (no parameter update); bias corrections count from the second step.
Checked against pytorch-optimizer's ``SOAP`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class SOAP(torch.optim.Optimizer):
    """SOAP optimiser. Defaults: the spec's (lr 3e-3, betas (0.95, 0.95), shampoo_beta =
    beta2, frequency 10, eps 1e-8, weight decay 0.01); the paper's tuned 130M preset is
    ``BASELINES["soap"]``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
    ) -> None:
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if shampoo_beta is not None and not 0.0 <= shampoo_beta < 1.0:
            raise ValueError(f"shampoo_beta must be in [0, 1) or None, got {shampoo_beta!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be non-negative, got {eps!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")
        if not isinstance(precondition_frequency, int) or precondition_frequency < 1:
            raise ValueError(
                f"precondition_frequency must be a positive integer, got {precondition_frequency!r}"
            )
        if not isinstance(max_precond_dim, int) or max_precond_dim < 0:
            raise ValueError(
                f"max_precond_dim must be a non-negative integer, got {max_precond_dim!r}"
            )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            shampoo_beta=shampoo_beta,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
        )
        super().__init__(params, defaults)

    # -- rotations -------------------------------------------------------------------------
    @staticmethod
    def _rotate(x: torch.Tensor, bases: list[torch.Tensor | None], inverse: bool) -> torch.Tensor:
        """Contract dimension i of ``x`` with ``Q_i`` (``Q_i^T`` x along i) or, inverse, back.

        Each contraction moves the processed dimension to the end, so after all k of them
        the dimensions are back in order. ``None`` bases leave their dimension as it is.
        """
        for q in bases:
            if q is None:
                x = x.movedim(0, -1)
            else:
                # forward: y[..., j] = sum_i x[i, ...] Q[i, j]; inverse: sum_j x[j, ...] Q[i, j]
                x = torch.tensordot(x, q if not inverse else q.T, dims=([0], [0]))
        return x

    def _eigenbases(self, stats: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
        """Eigenvectors of each statistic, sorted by decreasing eigenvalue (first basis)."""
        out: list[torch.Tensor | None] = []
        for s in stats:
            if s is None:
                out.append(None)
                continue
            work = s if s.dtype == torch.float64 else s.float()
            eye = torch.eye(s.shape[0], dtype=work.dtype, device=s.device)
            _, vecs = torch.linalg.eigh(work + 1e-30 * eye)
            out.append(vecs.flip(1).to(s.dtype))
        return out

    def _refresh_bases(self, state: dict[str, Any]) -> None:
        """One power-iteration step + QR per basis; re-sort the second moment to match."""
        exp_avg_sq = state["exp_avg_sq"]
        new: list[torch.Tensor | None] = []
        for dim, (s, q) in enumerate(zip(state["stats"], state["bases"], strict=True)):
            if s is None or q is None:
                new.append(None)
                continue
            power = s @ q
            estimated = (q * power).sum(0)  # Rayleigh quotients q_j^T S q_j
            order = torch.argsort(estimated, descending=True)
            exp_avg_sq = exp_avg_sq.index_select(dim, order)
            power = power[:, order]
            q_new, _ = torch.linalg.qr(power if power.dtype == torch.float64 else power.float())
            new.append(q_new.to(q.dtype))
        state["exp_avg_sq"] = exp_avg_sq
        state["bases"] = new

    def _update_stats(self, grad: torch.Tensor, state: dict[str, Any], beta: float) -> None:
        for dim, s in enumerate(state["stats"]):
            if s is None:
                continue
            g = grad.movedim(dim, 0).reshape(grad.shape[dim], -1)
            s.lerp_(g @ g.T, 1.0 - beta)

    # -- step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            shampoo_beta = beta2 if group["shampoo_beta"] is None else group["shampoo_beta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SOAP does not support sparse gradients")
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["stats"] = [
                        torch.zeros(n, n, dtype=p.dtype, device=p.device)
                        if p.ndim > 1 and n <= group["max_precond_dim"]
                        else None
                        for n in p.shape
                    ]
                    self._update_stats(grad, state, shampoo_beta)
                    state["bases"] = self._eigenbases(state["stats"])
                    continue  # the reference's first step only initialises
                state["step"] += 1
                t = state["step"]
                bases = state["bases"]
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                g_rot = self._rotate(grad, bases, inverse=False)
                exp_avg.lerp_(grad, 1.0 - beta1)
                exp_avg_sq.lerp_(g_rot.square(), 1.0 - beta2)
                m_rot = self._rotate(exp_avg, bases, inverse=False)
                update = self._rotate(m_rot / (exp_avg_sq.sqrt() + group["eps"]), bases, True)
                step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
                p.add_(update, alpha=-step_size)
                if group["weight_decay"] > 0:
                    p.mul_(1.0 - group["lr"] * group["weight_decay"])
                self._update_stats(grad, state, shampoo_beta)
                if t % group["precondition_frequency"] == 0:
                    self._refresh_bases(state)
        return loss
