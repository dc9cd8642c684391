"""NAdamW and Cautious AdamW as the paper ran them (Levanter / optax maths), in-package.

- :class:`NAdamW`: optax's ``scale_by_adam(nesterov=True)`` with decoupled weight decay:
  ``m_hat = b1 * m_t / (1 - b1^(t+1)) + (1 - b1) * g_t / (1 - b1^t)``. ``torch.optim.NAdam``
  is a different algorithm (Dozat's momentum-decay schedule), so it is not used.
  Source: marin ``marin/optimizer_sweep/Nadam/nadam.py`` builds Levanter's AdamConfig with
  ``nesterov=True``.
- :class:`CautiousAdamW`: ``stanford-crfm/levanter:src/levanter/optim/cautious.py``: the
  Adam update u is masked where it disagrees in sign with the gradient and rescaled by the
  mean of the mask: ``u * 1[u g > 0] / (mean(1[u g > 0]) + eps)``, per tensor.

Both add weight decay ``lr * wd * theta`` to the update (optax ``add_decayed_weights`` then
``scale(-lr)``), applied to every parameter of a group whose ``weight_decay`` is non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def _check(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative, got {eps!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay!r}")


class _AdamFamily(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.1,
    ) -> None:
        _check(lr, betas, eps, weight_decay)
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    def _direction(
        self, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, group: dict
    ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1.0 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                update = self._direction(p.grad, m, v, t, group)
                if group["weight_decay"] > 0:
                    update = update.add(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss


class NAdamW(_AdamFamily):
    """Nesterov Adam with decoupled weight decay (optax ``scale_by_adam(nesterov=True)``)."""

    def _direction(self, grad, m, v, t, group):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        m_hat = m.mul(beta1 / (1.0 - beta1 ** (t + 1))).add_(
            grad, alpha=(1.0 - beta1) / (1.0 - beta1**t)
        )
        v_hat = v / (1.0 - beta2**t)
        return m_hat / (v_hat.sqrt() + group["eps"])


class CautiousAdamW(_AdamFamily):
    """AdamW whose update is zeroed where it disagrees with the gradient's sign (Levanter)."""

    def _direction(self, grad, m, v, t, group):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        u = (m / (1.0 - beta1**t)) / ((v / (1.0 - beta2**t)).sqrt() + group["eps"])
        mask = (u * grad > 0).to(u.dtype)
        return u * mask / (mask.mean() + group["eps"])


class Signum(torch.optim.Optimizer):
    """Sign of an EMA momentum: ``m <- mu m + (1 - mu) g``, ``theta -= lr (sign(m) + wd theta)``.

    Scion's optimiser for embeddings, head, norms and biases (Levanter's ``scion.py`` pairs
    the spectral LMO on hidden matrices with Signum elsewhere). Written here because
    pytorch-optimizer 4.1's ``SCION`` sign norm indexes a second dimension of 1-D tensors.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
    ) -> None:
        _check(lr, (momentum, 0.0), 0.0, weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1.0 - group["momentum"])
                update = buf.sign()
                if group["weight_decay"] > 0:
                    update = update.add(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
        return loss
