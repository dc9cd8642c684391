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

    def _apply(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        ms: list[torch.Tensor],
        vs: list[torch.Tensor],
        steps: list[int],
        group: dict,
    ) -> None:
        """Apply the update to ``params`` (moments already updated, decay already applied)."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
            grads = [p.grad for p in params]
            ms = [self.state[p]["exp_avg"] for p in params]
            vs = [self.state[p]["exp_avg_sq"] for p in params]
            steps = [self.state[p]["step"] for p in params]
            # multi-tensor (foreach) ops: one kernel launch per op for the whole group
            torch._foreach_lerp_(ms, grads, 1.0 - beta1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1.0 - beta2)
            # decoupled decay first: p (1 - lr wd) - lr u is p - lr (u + wd p)
            if group["weight_decay"] > 0:
                torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])
            self._apply(params, grads, ms, vs, steps, group)
        return loss

    @staticmethod
    def _denominator(vs: list[torch.Tensor], steps: list[int], group: dict):  # type: ignore[no-untyped-def]
        """``sqrt(v) + eps sqrt(1 - b2^t)`` and ``sqrt(1 - b2^t)``: the Adam denominator
        ``sqrt(v / (1 - b2^t)) + eps`` times ``sqrt(1 - b2^t)``, whose factor the callers
        fold into the step size (as torch's Adam does), saving a pass over the state."""
        beta2 = group["betas"][1]
        root = [math.sqrt(1.0 - beta2**t) for t in steps]
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, [group["eps"] * r for r in root])
        return denom, root


class NAdamW(_AdamFamily):
    """Nesterov Adam with decoupled weight decay (optax ``scale_by_adam(nesterov=True)``):
    ``theta -= lr (m_hat / (sqrt(v / (1 - b2^t)) + eps) + wd theta)`` with
    ``m_hat = b1 m / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t)``."""

    def _apply(self, params, grads, ms, vs, steps, group):  # type: ignore[no-untyped-def]
        beta1 = group["betas"][0]
        denom, root = self._denominator(vs, steps, group)
        m_hat = torch._foreach_mul(ms, [beta1 / (1.0 - beta1 ** (t + 1)) for t in steps])
        grad_scales = [(1.0 - beta1) / (1.0 - beta1**t) for t in steps]
        if len(set(steps)) == 1:  # the usual case: one pass, no temporaries
            torch._foreach_add_(m_hat, grads, alpha=grad_scales[0])
        else:
            torch._foreach_add_(m_hat, torch._foreach_mul(grads, grad_scales))
        torch._foreach_addcdiv_(params, m_hat, denom, [-group["lr"] * r for r in root])


class CautiousAdamW(_AdamFamily):
    """AdamW whose update is zeroed where it disagrees with the gradient's sign (Levanter):
    ``u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``, then
    ``theta -= lr (u 1[u g > 0] / (mean(1[u g > 0]) + eps) + wd theta)`` per tensor."""

    def _apply(self, params, grads, ms, vs, steps, group):  # type: ignore[no-untyped-def]
        beta1 = group["betas"][0]
        denom, root = self._denominator(vs, steps, group)
        u = torch._foreach_div(ms, denom)  # u (1 - b1^t) / sqrt(1 - b2^t)
        for p, x, g, r, t in zip(params, u, grads, root, steps, strict=True):
            # the sign of u is the sign of m / denom; the mean stays on the device (no sync)
            mask = torch.mul(x, g).gt_(0)
            x.mul_(mask)
            scale = mask.mean().add_(group["eps"]).reciprocal_().mul_(r / (1.0 - beta1**t))
            p.add_(x.mul_(scale), alpha=-group["lr"])


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
