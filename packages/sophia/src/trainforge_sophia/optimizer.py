"""SophiaG and SophiaH: clipped, diagonal-Hessian-preconditioned sign momentum.

The update is the reference code's (Liuhong99/Sophia:sophia.py, ``_single_tensor_sophiag``),
with no bias correction::

    p   <- p * (1 - lr * weight_decay)                 # decoupled decay, per group
    m   <- beta1 * m + (1 - beta1) * g
    p   <- p - lr * sign(m) * min(|m| / (rho * bs * h + eps), 1)

and, every ``hessian_interval`` steps, on a fresh batch, ``h <- beta2 * h + (1 - beta2) * est``
where ``est`` is ``g_hat * g_hat`` with ``g_hat`` the gradient of a loss on labels sampled
from the model itself (Gauss-Newton-Bartlett, SophiaG) or ``u * (H u)`` (Hutchinson,
SophiaH). See :mod:`trainforge_sophia.hessian` for the estimators and the every-k helper.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from trainforge_kernels.sophia_update import sophia_update_compiled, sophia_update_reference

__all__ = ["SophiaG", "SophiaH", "decay_groups"]


def _dtensor_type() -> type | None:
    """``DTensor`` if ``torch.distributed.tensor`` is loaded (FSDP2 loads it), else None.
    Not imported here: that import costs about as much as importing torch itself."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _local_shards(p: Tensor, *others: Tensor) -> list[Tensor]:
    """The local tensors of a DTensor parameter and of its grad and state, checked to be
    sharded alike (an elementwise update is then a local one)."""
    out = [p.to_local()]
    for t in others:
        if type(t) is not type(p) or t.placements != p.placements or t.shape != p.shape:
            raise ValueError(
                "Sophia with a DTensor parameter needs its grad and state as DTensors with the "
                f"same placements ({p.placements}), got "
                f"{getattr(t, 'placements', type(t).__name__)}"
            )
        out.append(t.to_local())
    return out


# CPU path: tensors with at least this many elements are updated one by one in chunks of
# _CHUNK elements that stay in cache between the 8 elementwise ops; smaller tensors go
# through torch._foreach_* ops in one batch. The arithmetic is the same either way.
_CHUNK = 1 << 20
_SMALL = 1 << 16


def _check_number(name: str, value: Any, *, low: float, low_ok: bool, high: float | None = None,
                  high_ok: bool = False) -> float:  # fmt: skip
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    value = float(value)
    ok_low = value >= low if low_ok else value > low
    ok_high = high is None or (value <= high if high_ok else value < high)
    if not math.isfinite(value) or not ok_low or not ok_high:
        lo = "[" if low_ok else "("
        hi = "]" if high_ok else ")"
        interval = f"{lo}{low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    b1 = _check_number("betas[0]", betas[0], low=0.0, low_ok=True, high=1.0)
    b2 = _check_number("betas[1]", betas[1], low=0.0, low_ok=True, high=1.0)
    return (b1, b2)


def _check_bs(bs: Any, name: str = "bs") -> float | None:
    if bs is None:
        return None
    if isinstance(bs, bool) or not isinstance(bs, int | float):
        raise TypeError(f"{name} must be a positive number of predictions, got {bs!r}")
    if not bs > 0 or math.isinf(bs):
        raise ValueError(f"{name} must be > 0 (predictions per optimizer step), got {bs!r}")
    return bs


def _check_interval(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"hessian_interval must be a positive integer, got {k!r}")
    return k


class _Sophia(Optimizer):
    """Shared machinery of :class:`SophiaG` and :class:`SophiaH`."""

    _clamp_hessian = False  # SophiaH: negative Hutchinson estimates saturate to sign steps
    _uses_bs = True

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any],
                 hessian_interval: int) -> None:  # fmt: skip
        self.hessian_interval = _check_interval(hessian_interval)
        super().__init__(params, defaults)

    # -- per-group validation (also for groups added later) --------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._validate_group(self.param_groups[-1])
        except (TypeError, ValueError):
            # Atomic: a rejected group must not stay behind (the next step() would fail on
            # its missing state with a KeyError far from the cause).
            self.param_groups.pop()
            raise

    def _validate_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if isinstance(lr, Tensor):  # kept a tensor (schedulers may write into it); checked
            _check_number("lr", lr, low=0.0, low_ok=True)
        else:
            group["lr"] = _check_number("lr", lr, low=0.0, low_ok=True)
        group["betas"] = _check_betas(group["betas"])
        group["rho"] = _check_number("rho", group["rho"], low=0.0, low_ok=True)
        group["weight_decay"] = _check_number("weight_decay", group["weight_decay"], low=0.0,
                                              low_ok=True)  # fmt: skip
        group["eps"] = _check_number("eps", group["eps"], low=0.0, low_ok=False)
        if self._uses_bs:
            group["bs"] = _check_bs(group.get("bs"))
        if group.get("foreach") not in (None, True, False):
            raise TypeError(f"foreach must be None, True or False, got {group['foreach']!r}")
        if group.get("fused") not in (None, True, False):
            raise TypeError(f"fused must be None, True or False, got {group['fused']!r}")
        if group.get("fused") and group.get("foreach"):
            raise ValueError("fused=True and foreach=True cannot both be set")
        group.setdefault("step", 0)
        group.setdefault("hessian_step", -1)
        group.setdefault("hessian_updates", 0)
        group.setdefault("n_predictions", None)
        for p in group["params"]:
            if not p.is_floating_point() and not p.is_complex():
                raise TypeError(f"{type(self).__name__} needs floating parameters, got {p.dtype}")

    # -- the schedule ---------------------------------------------------------------------
    @property
    def steps_done(self) -> int:
        """Number of :meth:`step` calls so far (the first group's count)."""
        return int(self.param_groups[0]["step"])

    def hessian_due(self) -> bool:
        """True right after every ``hessian_interval``-th step (steps 10, 20, ... for k=10:
        the reference's ``iter_num % k == k - 1`` after its step), until the estimate for
        that step has been taken."""
        group = self.param_groups[0]
        step = int(group["step"])
        return step > 0 and step % self.hessian_interval == 0 and group["hessian_step"] != step

    # -- the Hessian EMA ------------------------------------------------------------------
    @torch.no_grad()
    def _update_hessian_from(self, estimates: Mapping[Tensor, Tensor], *, square: bool,
                             n_predictions: float | None) -> None:  # fmt: skip
        n_predictions = _check_bs(n_predictions, "n_predictions")
        if not estimates:
            raise ValueError(
                f"{type(self).__name__}.update_hessian: no parameter has a Hessian estimate "
                "(for SophiaG: call backward() on gnb_loss(...) first, or use "
                "hessian_context() / maybe_update_hessian())"
            )
        for group in self.param_groups:
            _, beta2 = group["betas"]
            touched = False
            for p in group["params"]:
                est = estimates.get(p)
                if est is None:
                    continue
                if est.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                if est.shape != p.shape:
                    raise ValueError(
                        f"Hessian estimate of shape {tuple(est.shape)} for a parameter of "
                        f"shape {tuple(p.shape)}"
                    )
                state = self._init_state(p)
                h = state["hessian"]
                if square:  # sophia.py update_hessian: h.mul_(b2).addcmul_(g, g, value=1-b2)
                    h.mul_(beta2).addcmul_(est, est, value=1 - beta2)
                else:
                    h.mul_(beta2).add_(est, alpha=1 - beta2)
                touched = True
            if touched:
                group["hessian_step"] = group["step"]
                group["hessian_updates"] += 1
                if n_predictions is not None:
                    group["n_predictions"] = n_predictions

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0 or "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["hessian"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    # -- the step -------------------------------------------------------------------------
    def _group_rho_bs(self, group: dict[str, Any], bs: float | None) -> float:
        if not self._uses_bs:
            return group["rho"]
        bs = bs if bs is not None else group["bs"]
        if bs is None:
            bs = group["n_predictions"]
        if bs is None:
            if group["hessian_updates"] == 0:
                return group["rho"]  # h == 0 still: rho * bs * h is 0 for any bs
            raise ValueError(
                "SophiaG needs bs, the number of predictions (tokens for a language model) "
                "averaged in the loss of one optimizer step: pass SophiaG(..., bs=...), "
                "step(bs=...), or update_hessian(n_predictions=...)"
            )
        return group["rho"] * bs  # sophia.py: ratio = |m| / (rho * bs * hess + 1e-15)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, bs: float | None = None) -> Any:
        """One optimizer step. ``bs`` (SophiaG) overrides the groups' ``bs`` for this step."""
        bs = _check_bs(bs)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        dtensor = _dtensor_type()
        for group in self.param_groups:
            params, grads, exp_avgs, hessians = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"{type(self).__name__} does not support sparse gradients")
                state = self._init_state(p)
                g, m, h, q = p.grad, state["exp_avg"], state["hessian"], p
                if dtensor is not None and isinstance(q, dtensor):
                    # FSDP2 / DTensor: the update is elementwise, so each rank updates its
                    # own shards (p, its grad and state are sharded alike) with no traffic.
                    q, g, m, h = _local_shards(q, g, m, h)
                if torch.is_complex(q):
                    q, g, m, h = (torch.view_as_real(t) for t in (q, g, m, h))
                params.append(q)
                grads.append(g)
                exp_avgs.append(m)
                hessians.append(h)
            group["step"] += 1
            if not params:
                continue
            lr = group["lr"]
            lr = float(lr) if isinstance(lr, Tensor) else lr
            beta1, _ = group["betas"]
            group["last_rho_bs"] = rho_bs = self._group_rho_bs(group, bs)
            kw = dict(lr=lr, beta1=beta1, rho_bs=rho_bs,
                      weight_decay=group["weight_decay"], eps=group["eps"],
                      maximize=group["maximize"], clamp_hessian=self._clamp_hessian)  # fmt: skip
            if group.get("fused"):
                _apply_fused(params, grads, exp_avgs, hessians, **kw)
            else:
                _apply(params, grads, exp_avgs, hessians, foreach=group["foreach"], **kw)
        return loss

    # -- monitoring -----------------------------------------------------------------------
    @torch.no_grad()
    def stats(self, bs: float | None = None) -> dict[str, float]:
        """Numbers to log (train_sophiag.py's monitoring):

        - ``win_rate``: fraction of coordinates whose step is *not* clipped,
          ``|m| < rho * bs * h``; the README's tuning rule keeps it in 0.1-0.5;
        - ``clip_frac`` = 1 - win_rate (coordinates taking a full ``lr * sign(m)`` step);
        - ``hessian_l1`` / ``hessian_l2``: norms of the Hessian EMA; ``hessian_mean``: the
          mean of ``rho * bs * h`` (the typical denominator); ``momentum_l2``;
        - ``hessian_updates``: estimates taken so far.
        """
        n = unclipped = 0
        missing = False
        l1 = l2 = mean_denom = mom = 0.0
        for group in self.param_groups:
            try:
                rho_bs = self._group_rho_bs(group, bs)
            except ValueError:  # bs only ever given to step(bs=...): the last one used
                rho_bs = group.get("last_rho_bs") or math.nan
            for p in group["params"]:
                state = self.state.get(p)
                if not state or "exp_avg" not in state:
                    continue
                m, h = state["exp_avg"], state["hessian"]
                n += m.numel()
                missing |= math.isnan(rho_bs)
                if not math.isnan(rho_bs):
                    unclipped += int((m.abs() < rho_bs * h).sum())
                    mean_denom += float((rho_bs * h).double().sum())
                l1 += float(h.double().abs().sum())
                l2 += float(h.double().square().sum())
                mom += float(m.double().square().sum())
        win = unclipped / n if n and not missing else math.nan
        return {
            "win_rate": win,
            "clip_frac": 1.0 - win,
            "hessian_l1": l1,
            "hessian_l2": math.sqrt(l2),
            "hessian_mean": mean_denom / n if n else math.nan,
            "momentum_l2": math.sqrt(mom),
            "hessian_updates": float(self.param_groups[0]["hessian_updates"]),
        }

    @contextlib.contextmanager
    def _swap_grads(self) -> Iterator[list[Tensor]]:
        params = [p for g in self.param_groups for p in g["params"]]
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            yield params
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g


class SophiaG(_Sophia):
    """Sophia with the Gauss-Newton-Bartlett Hessian estimate (Liu et al., ICLR 2024).

    Args:
        params: parameters or parameter groups (each group may set every keyword below
            except ``hessian_interval``; nanoGPT puts biases, norms and embeddings in a
            ``weight_decay=0`` group).
        lr: peak learning rate; about AdamW's (Liuhong99/Sophia README). Every coordinate
            moves by at most ``lr`` per step (plus decay).
        betas: ``(beta1, beta2)``: EMA of the gradient and of the Hessian estimate.
        rho: clipping threshold (the paper's gamma); tune it so :meth:`stats`'s
            ``win_rate`` stays in 0.1-0.5.
        weight_decay: decoupled, ``p <- p * (1 - lr * weight_decay)`` before the update
            (about 2x AdamW's, per the README).
        eps: added to the denominator (1e-15 in sophia.py).
        bs: **predictions per optimizer step**: the number of terms averaged in the loss
            whose gradient feeds the GNB estimate (tokens for a language model, batch size
            times sequence length over all micro-batches and data-parallel ranks; images
            for a classifier). The code stores ``g_hat * g_hat`` of the *mean* loss, whose
            expectation is ``diag(GN) / bs``, and multiplies by ``bs`` in the step (issue
            #48 of the reference repo). ``None``: take the count recorded by
            ``update_hessian(n_predictions=...)`` (the helpers record it), or fail clearly.
        hessian_interval: ``k``, estimate the Hessian every k steps (10 in the paper).
        maximize: ascend instead of descend.
        foreach: ``None`` picks per device (fused Triton op on CUDA, in-place chunked or
            ``torch._foreach_*`` ops on CPU); ``True`` forces ``torch._foreach_*`` ops;
            ``False`` forces one tensor at a time through the torch reference.
        fused: ``True``: one fused pass per tensor on every device, as
            ``torch.optim.AdamW(fused=True)``: the Triton kernel on CUDA; on CPU one C
            loop per step for float32/float64 tensors (built on first use with the system
            C compiler and cached on disk; see ``sophia_update_compiled``), a
            ``torch.compile``d loop for other dtypes (needs a C++ compiler). Fastest on
            CPU (see the README's benchmark). Not bit-identical to the reference: the CPU
            loops round
            ``(1-beta1)*g`` and ``lr*u`` before adding them, where ATen's ``add_(alpha=)``
            is a fused multiply-add; a last-ulp difference in a near-zero ``m`` can flip
            its sign, so runs drift apart (the README's "Limits" says by how much).

    A NaN or inf gradient is not checked (as in ``torch.optim``): it turns that
    coordinate's momentum and parameter into NaN.

    Usage::

        loss.backward(); opt.step(); opt.zero_grad()
        if opt.hessian_due():
            with opt.hessian_context(n_predictions=n_tokens):
                gnb_loss(model(x_fresh).logits).backward()

    or :func:`trainforge_sophia.maybe_update_hessian`, which does this dance.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 6e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.05,
        weight_decay: float = 0.2,
        eps: float = 1e-15,
        *,
        bs: float | None = None,
        hessian_interval: int = 10,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps,
                        bs=bs, maximize=bool(maximize), foreach=foreach,
                        fused=fused)  # fmt: skip
        super().__init__(params, defaults, hessian_interval)

    def update_hessian(self, n_predictions: float | None = None) -> None:
        """``h <- beta2 * h + (1 - beta2) * grad * grad`` for every parameter with a grad
        (the grads of a :func:`~trainforge_sophia.gnb_loss` backward). ``n_predictions``
        records how many predictions that loss averaged (used when ``bs`` is None)."""
        ests = {p: p.grad for g in self.param_groups for p in g["params"] if p.grad is not None}
        self._update_hessian_from(ests, square=True, n_predictions=n_predictions)

    @contextlib.contextmanager
    def hessian_context(self, n_predictions: float | None = None,
                        grad_clip: float | None = None) -> Iterator[None]:  # fmt: skip
        """Set the training grads aside, let the body backward a GNB loss, then (on a clean
        exit) clip those grads to ``grad_clip`` (the reference clips to 1.0; None: no clip),
        update the Hessian EMA, and put the training grads back."""
        with self._swap_grads() as params:
            yield
            if grad_clip is not None:
                grads = [p for p in params if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(grads, grad_clip)
            self.update_hessian(n_predictions=n_predictions)


class SophiaH(_Sophia):
    """Sophia with Hutchinson's Hessian-diagonal estimate ``u * (H u)`` (paper Alg. 1).

    The step is the paper's ``p <- p - lr * clip(m / max(rho * h, eps), 1)``, computed as
    ``clamp(m / (max(rho * h, 0) + eps), -1, 1)``: a negative estimate saturates to a
    sign step. There is no ``bs``: Hutchinson estimates the Hessian of the mean loss
    directly. ``rho`` is the paper's gamma (0.01 for Sophia-H). kozistr's SophiaH with
    ``p=rho`` and ``lr=lr / rho`` is the same update. Estimates come from
    :func:`~trainforge_sophia.hutchinson_diag` through :meth:`update_hessian` or
    :func:`~trainforge_sophia.maybe_update_hessian` (which needs a double backward).

    ``n_samples`` probes per estimate; ``dist`` is ``"rademacher"`` (both signs, unlike
    kozistr's HEAD) or ``"gaussian"``; both are kept on the optimizer for the helper.
    """

    _clamp_hessian = True
    _uses_bs = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 6e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.01,
        weight_decay: float = 0.2,
        eps: float = 1e-12,
        *,
        hessian_interval: int = 10,
        n_samples: int = 1,
        dist: str = "rademacher",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if dist not in ("rademacher", "gaussian"):
            raise ValueError(f"dist must be 'rademacher' or 'gaussian', got {dist!r}")
        self.n_samples = n_samples
        self.dist = dist
        defaults = dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, eps=eps,
                        maximize=bool(maximize), foreach=foreach, fused=fused)  # fmt: skip
        super().__init__(params, defaults, hessian_interval)

    def update_hessian(self, estimates: Mapping[Tensor, Tensor] | Sequence[Tensor | None]) -> None:
        """``h <- beta2 * h + (1 - beta2) * est``; ``estimates`` maps parameters to their
        Hessian-diagonal estimates, or lists them in ``param_groups`` order (None skips)."""
        if isinstance(estimates, Mapping):
            ests = dict(estimates)
        else:
            params = [p for g in self.param_groups for p in g["params"]]
            estimates = list(estimates)
            if len(estimates) != len(params):
                raise ValueError(f"got {len(estimates)} estimates for {len(params)} parameters")
            ests = {p: e for p, e in zip(params, estimates, strict=True) if e is not None}
        self._update_hessian_from(ests, square=False, n_predictions=None)


# -- the elementwise update over a list of tensors ----------------------------------------
def _apply(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
           hessians: list[Tensor], *, foreach: bool | None, **kw: Any) -> None:  # fmt: skip
    if foreach is True:
        buckets: dict[tuple, list[int]] = defaultdict(list)
        for i, p in enumerate(params):
            buckets[(p.device, p.dtype)].append(i)
        for idx in buckets.values():
            _foreach_update(*_pick(idx, params, grads, exp_avgs, hessians), **kw)
        return
    small: dict[tuple, list[int]] = defaultdict(list)
    scratch: dict[tuple, Tensor] = {}
    for i, p in enumerate(params):
        if p.is_cuda and foreach is None:
            torch.ops.trainforge.sophia_update(p, grads[i], exp_avgs[i], hessians[i],
                                               kw["lr"], kw["beta1"], kw["rho_bs"],
                                               kw["weight_decay"], kw["eps"], kw["maximize"],
                                               kw["clamp_hessian"])  # fmt: skip
        elif foreach is None and p.numel() < _SMALL:
            small[(p.device, p.dtype)].append(i)
        else:
            _inplace_update(p, grads[i], exp_avgs[i], hessians[i], scratch, **kw)
    for idx in small.values():
        _foreach_update(*_pick(idx, params, grads, exp_avgs, hessians), **kw)


def _apply_fused(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                 hessians: list[Tensor], **kw: Any) -> None:  # fmt: skip
    """``fused=True``: the compiled loop for tensors off CUDA; CUDA tensors go through
    :func:`_apply`'s default dispatch (the Triton op)."""
    on_cuda = [i for i, p in enumerate(params) if p.is_cuda]
    if not on_cuda:  # the common CPU case: no copies of the lists
        sophia_update_compiled(params, grads, exp_avgs, hessians, **kw)
        return
    elsewhere = [i for i, p in enumerate(params) if not p.is_cuda]
    if elsewhere:
        sophia_update_compiled(*_pick(elsewhere, params, grads, exp_avgs, hessians), **kw)
    if on_cuda:
        _apply(*_pick(on_cuda, params, grads, exp_avgs, hessians), foreach=None, **kw)


def _pick(idx: list[int], *lists: list[Tensor]) -> list[list[Tensor]]:
    return [[lst[i] for i in idx] for lst in lists]


def _inplace_update(p: Tensor, g: Tensor, m: Tensor, h: Tensor, scratch: dict[tuple, Tensor],
                    **kw: Any) -> None:  # fmt: skip
    """The torch reference on one tensor; large contiguous tensors in cache-sized chunks."""
    tensors = (p, g, m, h)
    if p.numel() <= _CHUNK or not all(t.is_contiguous() for t in tensors):
        sophia_update_reference(p, g, m, h, **kw)
        return
    key = (p.device, p.dtype)
    buf = scratch.get(key)
    if buf is None:
        buf = scratch[key] = torch.empty(_CHUNK, device=p.device, dtype=p.dtype)
    flat = [t.view(-1) for t in tensors]
    n = p.numel()
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        pc, gc, mc, hc = (t[start:stop] for t in flat)
        sophia_update_reference(pc, gc, mc, hc, scratch=buf, **kw)


def _foreach_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                    hessians: list[Tensor], *, lr: float, beta1: float, rho_bs: float,
                    weight_decay: float, eps: float, maximize: bool,
                    clamp_hessian: bool) -> None:  # fmt: skip
    """The same arithmetic as ``sophia_update_reference`` with ``torch._foreach_*`` ops."""
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=-(1.0 - beta1) if maximize else 1.0 - beta1)
    denom = torch._foreach_mul(hessians, rho_bs)
    if clamp_hessian:
        torch._foreach_clamp_min_(denom, 0.0)
    torch._foreach_add_(denom, eps)
    ratio = torch._foreach_div(exp_avgs, denom)
    del denom
    torch._foreach_clamp_min_(ratio, -1.0)
    torch._foreach_clamp_max_(ratio, 1.0)
    torch._foreach_add_(params, ratio, alpha=-lr)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups, nanoGPT style (train_sophiag.py ``configure_optimizers``):
    tensors with 2 or more dims (matmul weights, embeddings) decay, the rest (biases,
    norms) do not. Shared tensors are listed once."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weight_decay = _check_number("weight_decay", weight_decay, low=0.0, low_ok=True)
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
