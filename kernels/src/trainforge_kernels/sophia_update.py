"""Fused elementwise Sophia update (``trainforge::sophia_update``).

One pass over a parameter and its optimizer state, the update rule of SophiaG
(Liuhong99/Sophia:sophia.py, ``_single_tensor_sophiag``)::

    p <- p * (1 - lr * weight_decay)                      # decoupled decay
    m <- beta1 * m + (1 - beta1) * g                      # g negated when maximize
    d <- rho_bs * h + eps                                 # rho_bs = rho * bs
    p <- p - lr * clamp(m / d, -1, 1)

``clamp(m / d, -1, 1)`` equals the reference's ``sign(m) * clamp(|m| / d, max=1)`` bit for
bit (IEEE division is symmetric in sign). With ``clamp_hessian=True`` the Hessian term is
clamped at zero before ``eps`` is added (Sophia-H, whose Hutchinson estimate can be
negative: those coordinates saturate to sign updates, the paper's ``max(gamma * h, eps)``).

The Triton kernel reads p, g, m, h once and writes p and m once (6 tensor passes); the
plain-torch reference runs the same arithmetic as a sequence of in-place ops, with one
scratch buffer, in the reference code's order, so on CPU it reproduces ``sophia.py``
exactly. :func:`sophia_update_compiled` is the same one-pass loop for any device, generated
by ``torch.compile`` (Inductor's vectorised C++ on CPU; it needs a C++ compiler): the CPU
counterpart of ``torch.optim.AdamW(fused=True)``.
"""

from __future__ import annotations

import contextlib
import math

import torch

from trainforge_kernels._dispatch import BenchCase, register_kernel, use_triton

try:  # Triton is optional: without it (or without CUDA) the torch reference runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the platform
    triton = None
    tl = None

__all__ = ["sophia_update", "sophia_update_compiled", "sophia_update_reference"]

_NAME = "trainforge::sophia_update"
_BLOCK = 1024


def sophia_update_reference(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    hessian: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    rho_bs: float,
    weight_decay: float,
    eps: float,
    maximize: bool = False,
    clamp_hessian: bool = False,
    scratch: torch.Tensor | None = None,
) -> None:
    """The update in plain torch, in place on ``param`` and ``exp_avg``.

    ``scratch`` (optional) is a buffer with at least ``param.numel()`` elements of
    ``param``'s dtype and device; passing one avoids allocating a temporary (callers that
    process a large tensor in cache-sized chunks reuse one buffer).
    """
    if weight_decay != 0.0:  # x * 1.0 == x, so skipping the no-op decay changes nothing
        param.mul_(1.0 - lr * weight_decay)
    exp_avg.mul_(beta1).add_(grad, alpha=-(1.0 - beta1) if maximize else 1.0 - beta1)
    if scratch is None:
        denom = torch.mul(hessian, rho_bs)
    else:
        denom = scratch.view(-1)[: hessian.numel()].view_as(hessian)
        torch.mul(hessian, rho_bs, out=denom)
    if clamp_hessian:
        denom.clamp_(min=0.0)
    denom.add_(eps)
    torch.div(exp_avg, denom, out=denom)
    denom.clamp_(-1.0, 1.0)
    param.add_(denom, alpha=-lr)


if triton is not None:

    @triton.jit
    def _sophia_update_kernel(
        p_ptr,
        g_ptr,
        m_ptr,
        h_ptr,
        n_elements,
        lr,
        decay,
        beta1,
        one_minus_beta1,
        rho_bs,
        eps,
        MAXIMIZE: tl.constexpr,
        CLAMP_H: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        p = tl.load(p_ptr + offs, mask=mask).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=mask).to(tl.float32)
        h = tl.load(h_ptr + offs, mask=mask).to(tl.float32)
        if MAXIMIZE:
            g = -g
        p = p * decay
        m = m * beta1 + g * one_minus_beta1
        d = h * rho_bs
        if CLAMP_H:
            d = tl.maximum(d, 0.0)
        d = d + eps
        u = tl.minimum(tl.maximum(m / d, -1.0), 1.0)
        p = p - lr * u
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)
        tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)


def _sophia_update_triton(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    hessian: torch.Tensor,
    lr: float,
    beta1: float,
    rho_bs: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    clamp_hessian: bool,
) -> None:
    n = param.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, _BLOCK),)
    _sophia_update_kernel[grid](
        param, grad, exp_avg, hessian, n,
        lr, 1.0 - lr * weight_decay, beta1, 1.0 - beta1, rho_bs, eps,
        MAXIMIZE=bool(maximize), CLAMP_H=bool(clamp_hessian), BLOCK=_BLOCK,
    )  # fmt: skip


def _check_tensors(param, grad, exp_avg, hessian) -> None:
    tensors = {"param": param, "grad": grad, "exp_avg": exp_avg, "hessian": hessian}
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise TypeError(f"sophia_update: {name} must be a floating tensor, got {t.dtype}")
        if t.shape != param.shape:
            raise ValueError(
                f"sophia_update: {name} has shape {tuple(t.shape)}, param has {tuple(param.shape)}"
            )
        if t.device != param.device:
            raise ValueError(f"sophia_update: {name} is on {t.device}, param on {param.device}")


def _check_numbers(lr, beta1, rho_bs, weight_decay, eps) -> None:
    if not lr >= 0.0:
        raise ValueError(f"sophia_update: lr must be >= 0, got {lr!r}")
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"sophia_update: beta1 must be in [0, 1), got {beta1!r}")
    if not rho_bs >= 0.0:
        raise ValueError(f"sophia_update: rho_bs must be >= 0, got {rho_bs!r}")
    if not weight_decay >= 0.0:
        raise ValueError(f"sophia_update: weight_decay must be >= 0, got {weight_decay!r}")
    if not eps > 0.0:
        raise ValueError(f"sophia_update: eps must be > 0, got {eps!r}")


# -- the torch.compile'd one-pass update (CPU) -------------------------------------------
# Tensors per compiled call. Each call pays the compiler's guards and dispatch (20 us with
# warm caches, 100 us or more right after a pass over the model evicted them): one tensor
# per call made a 10M-parameter step 1.3-1.4x fused AdamW, 16 per call 1.1x. Shorter lists
# are padded with tiny dummies so that every call has the same signature (one graph per
# device and dtypes). The first compile grows with the group: 16 s with an empty Inductor
# cache on two cores (4 s warm), against 5 s at 8 per call, which ran 1.13x.
_GROUP = 16
_PAD_NUMEL = 64  # > 1: sizes 0 and 1 would be specialised (a second graph)


def _one_pass(p, g, m, h, scalars) -> None:
    """The kernel's arithmetic as one traceable function on flat tensors. Every number is
    data (``scalars``): a new lr from a schedule, ``maximize`` (the sign of g) and
    ``clamp_hessian`` (the floor of the Hessian term, 0 or -inf) never recompile."""
    lr, decay, beta1, one_minus_beta1, rho_bs, eps, g_sign, h_floor = scalars.unbind()
    m_new = m * beta1 + (g * g_sign) * one_minus_beta1
    d = torch.maximum(h * rho_bs, h_floor) + eps
    u = (m_new / d).clamp(-1.0, 1.0)
    p.copy_(p * decay - lr * u)
    m.copy_(m_new)


def _one_pass_group(ps, gs, ms, hs, scalars) -> None:
    """:func:`_one_pass` on ``_GROUP`` tensors: one graph, one loop per tensor."""
    for p, g, m, h in zip(ps, gs, ms, hs, strict=True):
        _one_pass(p, g, m, h, scalars)


_compiled_group = None


def _get_compiled_group():
    global _compiled_group
    if _compiled_group is None:
        # dynamic=True: one kernel for every tensor size (per dtype).
        _compiled_group = torch.compile(_one_pass_group, dynamic=True, fullgraph=True)
    return _compiled_group


@contextlib.contextmanager
def _no_duck_shapes():
    """Trace with a symbol per size: by default equal sizes share one ("duck shapes"), and
    groups with different patterns of equal sizes would each need a graph. Only tracing
    reads the flag (a private one: without it, such groups recompile, still correct). Set
    directly, as ``_config.patch`` costs ~20 us a call."""
    try:
        from torch.fx.experimental import _config
    except ImportError:  # pragma: no cover - depends on the torch version
        _config = None
    saved = getattr(_config, "use_duck_shape", None)
    if saved is None:  # pragma: no cover - depends on the torch version
        yield
        return
    _config.use_duck_shape = False
    try:
        yield
    finally:
        _config.use_duck_shape = saved


def _flat_alias(t: torch.Tensor) -> torch.Tensor:
    """A 1-D tensor on ``t``'s memory that is not a view: the compiler guards on a view's
    base shape and keeps ``nn.Parameter`` shapes static, and either would recompile."""
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), (t.numel(),))


_pads: dict[tuple, list[list[torch.Tensor]]] = {}


def _padding(key: tuple, count: int) -> list[list[torch.Tensor]]:
    """``count`` dummy (p, g, m, h) slots for the group ``key`` = (device, p, g, m and h
    dtypes); the update writes into them, harmlessly, and they are never read."""
    if key not in _pads:
        device, *dtypes = key
        _pads[key] = [[torch.zeros(_PAD_NUMEL, device=device, dtype=dt) for dt in dtypes]
                      for _ in range(_GROUP)]  # fmt: skip
    return _pads[key][:count]


def sophia_update_compiled(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    hessians: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    rho_bs: float,
    weight_decay: float,
    eps: float,
    maximize: bool = False,
    clamp_hessian: bool = False,
) -> None:
    """The update on lists of tensors, one fused pass per tensor, in place.

    Contiguous tensors go through one ``torch.compile``d loop each (read p, g, m, h; write
    p, m), 16 tensors per compiled call, compiled once per process, device and dtypes for
    all sizes, list lengths and hyper-parameters (Inductor also caches it on disk);
    non-contiguous and one-element tensors take :func:`sophia_update_reference`. The
    arithmetic is the kernel's, with two roundings where the eager reference has one: on
    CPU, ATen's ``add_(alpha=)`` is a fused multiply-add and Inductor compiles with
    ``-ffp-contract=off``, so ``m*beta1 + (1-beta1)*g`` and ``p*decay - lr*u`` round the
    product first (last-ulp differences, which can flip the sign of a near-zero ``m``).
    Raises ``RuntimeError`` naming the cause when compilation fails (on CPU, Inductor
    needs a working C++ compiler).
    """
    if not len(params) == len(grads) == len(exp_avgs) == len(hessians):
        raise ValueError(
            "sophia_update_compiled: params, grads, exp_avgs and hessians must have the same "
            f"length, got {len(params)}, {len(grads)}, {len(exp_avgs)}, {len(hessians)}"
        )
    _check_numbers(lr, beta1, rho_bs, weight_decay, eps)
    groups: dict[tuple, list[list[torch.Tensor]]] = {}
    with torch.no_grad():
        for p, g, m, h in zip(params, grads, exp_avgs, hessians, strict=True):
            _check_tensors(p, g, m, h)
            n = p.numel()
            if n == 0:
                continue
            # one element: the compiler would specialise the size (a graph of its own)
            if n == 1 or not (p.is_contiguous() and g.is_contiguous() and m.is_contiguous()
                              and h.is_contiguous()):  # fmt: skip
                sophia_update_reference(
                    p, g, m, h, lr=lr, beta1=beta1, rho_bs=rho_bs, weight_decay=weight_decay,
                    eps=eps, maximize=maximize, clamp_hessian=clamp_hessian,
                )  # fmt: skip
                continue
            slot = [_flat_alias(t) for t in (p, g, m, h)]
            groups.setdefault((p.device, p.dtype, g.dtype, m.dtype, h.dtype), []).append(slot)
    if not groups:
        return
    fn = _get_compiled_group()
    values = [lr, 1.0 - lr * weight_decay, beta1, 1.0 - beta1, rho_bs, eps,
              -1.0 if maximize else 1.0, 0.0 if clamp_hessian else -math.inf]  # fmt: skip
    try:
        with torch.no_grad(), _no_duck_shapes():
            for key, slots in groups.items():
                device, p_dtype = key[:2]
                # The numbers in the compute dtype (fp32 for fp32 and lower): float64 numbers
                # would turn the whole loop into float64 arithmetic, 30% slower on CPU.
                compute = torch.promote_types(p_dtype, torch.float32)
                scalars = torch.tensor(values, device=device, dtype=compute)
                for start in range(0, len(slots), _GROUP):
                    chunk = slots[start : start + _GROUP]
                    chunk += _padding(key, _GROUP - len(chunk))
                    fn(*(list(col) for col in zip(*chunk, strict=True)), scalars)
    except Exception as err:  # Inductor raises many types; name the cause once
        raise RuntimeError(
            "sophia_update_compiled: torch.compile could not build the fused update "
            f"({type(err).__name__}: {err}); on CPU it needs a working C++ compiler. "
            "Use the unfused path instead (e.g. SophiaG(..., fused=False))."
        ) from err


@torch.library.custom_op(_NAME, mutates_args=("param", "exp_avg"))
def sophia_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    hessian: torch.Tensor,
    lr: float,
    beta1: float,
    rho_bs: float,
    weight_decay: float,
    eps: float,
    maximize: bool = False,
    clamp_hessian: bool = False,
) -> None:
    """One SophiaG step on one tensor, in place on ``param`` and ``exp_avg``.

    ``rho_bs`` is ``rho * bs`` (SophiaG) or ``rho`` (SophiaH). Runs the Triton kernel on
    contiguous CUDA tensors when Triton is present, the torch reference otherwise.
    """
    _check_tensors(param, grad, exp_avg, hessian)
    _check_numbers(lr, beta1, rho_bs, weight_decay, eps)
    tensors = (param, grad, exp_avg, hessian)
    if use_triton(*tensors) and all(t.is_contiguous() for t in tensors):
        _sophia_update_triton(
            param, grad, exp_avg, hessian, lr, beta1, rho_bs, weight_decay, eps,
            maximize, clamp_hessian,
        )  # fmt: skip
        return
    sophia_update_reference(
        param, grad, exp_avg, hessian, lr=lr, beta1=beta1, rho_bs=rho_bs,
        weight_decay=weight_decay, eps=eps, maximize=maximize, clamp_hessian=clamp_hessian,
    )  # fmt: skip


@sophia_update.register_fake
def _(param, grad, exp_avg, hessian, lr, beta1, rho_bs, weight_decay, eps, maximize=False,
      clamp_hessian=False) -> None:  # fmt: skip
    return None


# -- benchmark cases for kernels/benchmarks/run.py ----------------------------------------
def _bench_cases() -> list[BenchCase]:
    cases = []
    for rows, cols in ((4096, 4096), (768, 50257), (12288, 3072)):
        n = rows * cols

        def make(device: torch.device, rows: int = rows, cols: int = cols) -> tuple:
            gen = torch.Generator(device="cpu").manual_seed(0)
            p, g, m = (torch.randn(rows, cols, generator=gen).to(device) for _ in range(3))
            h = torch.rand(rows, cols, generator=gen).to(device) * 1e-4
            return p, g * 1e-2, m * 1e-2, h

        def run_triton(p, g, m, h):
            _sophia_update_triton(p, g, m, h, 3e-4, 0.965, 256.0, 0.2, 1e-15, False, False)
            return p

        def run_torch(p, g, m, h):
            sophia_update_reference(
                p, g, m, h, lr=3e-4, beta1=0.965, rho_bs=256.0, weight_decay=0.2, eps=1e-15
            )
            return p

        cases.append(
            BenchCase(
                op="sophia_update",
                shape=f"{rows}x{cols} fp32",
                make=make,
                triton_fn=run_triton,
                torch_fn=run_torch,
                bytes_moved=6 * 4 * n,  # read p, g, m, h; write p, m
                flops=12 * n,
                atol=1e-6,
                rtol=1e-5,
            )
        )
    return cases


register_kernel(
    "sophia_update",
    "SophiaG/SophiaH step: decoupled decay, momentum EMA, clipped m/(rho*bs*h+eps), write",
    bench_cases=_bench_cases,
)
