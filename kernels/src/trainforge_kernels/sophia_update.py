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
exactly. :func:`sophia_update_compiled` is the same one-pass loop on lists of tensors, the
CPU counterpart of ``torch.optim.AdamW(fused=True)``: a small C loop over all float32 and
float64 tensors at once (built with the system C compiler on first use), and a
``torch.compile``d loop for other dtypes and devices.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from array import array

import torch

from trainforge_kernels._dispatch import BenchCase, register_kernel, use_triton
from trainforge_kernels._native import SOPHIA_FLAGS, load_c_functions

try:  # Triton is optional: without it (or without CUDA) the torch reference runs.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the platform
    triton = None
    tl = None

__all__ = [
    "native_cpu_loop",
    "sophia_update",
    "sophia_update_compiled",
    "sophia_update_reference",
]

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


# -- the one-pass update on CPU ---------------------------------------------------------
# float32 and float64 run a small C loop (below), built once per machine with the system C
# compiler and called through ctypes: one call per step and dtype for all tensors, the
# elements split evenly over torch's threads (it uses OpenMP as ATen does, and joins ATen's
# own thread pool where both use libgomp). Before it, a torch.compile'd loop ran every
# tensor: Inductor fused 16 tensors a call into one C++ kernel whose loops ran mostly on one
# thread (`omp single`), and each call paid compiler guards plus a flat alias per tensor, so
# a 10M-float step took 2.1x fused AdamW with two threads. Other dtypes still take that
# compiled loop (one tensor a call), non-contiguous tensors the eager reference.
_C_SOURCE = r"""
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* sophia_update_compiled's arithmetic, in its order; built with -ffp-contract=off, so
   every product is rounded (as in Inductor's loop). NaN propagates like torch.maximum
   and torch.clamp. s: lr, 1 - lr*wd, beta1, 1 - beta1, rho_bs, eps, g_sign, h_floor. */
#define SOPHIA_LOOP(T, NAME)                                                              \
static void NAME##_run(T *restrict p, const T *restrict g, T *restrict m,                 \
                       const T *restrict h, int64_t n, const double *s) {                \
    const T lr = (T)s[0], decay = (T)s[1], beta1 = (T)s[2], omb1 = (T)s[3];               \
    const T rho_bs = (T)s[4], eps = (T)s[5], g_sign = (T)s[6], h_floor = (T)s[7];         \
    for (int64_t j = 0; j < n; j++) {                                                     \
        T m_new = m[j] * beta1 + (g[j] * g_sign) * omb1;                                  \
        T hd = h[j] * rho_bs;                                                             \
        hd = (hd > h_floor || hd != hd) ? hd : h_floor;                                   \
        T u = m_new / (hd + eps);                                                         \
        u = u < (T)-1 ? (T)-1 : (u > (T)1 ? (T)1 : u);                                    \
        p[j] = p[j] * decay - lr * u;                                                     \
        m[j] = m_new;                                                                     \
    }                                                                                     \
}                                                                                         \
/* count tensors; start[i] is the offset of tensor i in the concatenation of all          \
   (start[count] the total): each thread takes one contiguous range of it. */             \
void NAME(int64_t count, T *const *p, T *const *g, T *const *m, T *const *h,              \
          const int64_t *start, const double *s, int threads) {                          \
    const int64_t total = start[count];                                                   \
    _Pragma("omp parallel num_threads(threads) if(threads > 1)")                         \
    {                                                                                     \
        int64_t nt = 1, t = 0;                                                            \
        SOPHIA_THREAD_IDS                                                                 \
        const int64_t chunk = ((total + nt - 1) / nt + 63) / 64 * 64;                     \
        const int64_t lo = t * chunk, hi = lo + chunk < total ? lo + chunk : total;       \
        for (int64_t i = 0; i < count && start[i] < hi; i++) {                            \
            const int64_t a = start[i], b = start[i + 1];                                 \
            if (b <= lo) continue;                                                        \
            const int64_t x = lo > a ? lo - a : 0, y = (hi < b ? hi : b) - a;             \
            NAME##_run(p[i] + x, g[i] + x, m[i] + x, h[i] + x, y - x, s);                 \
        }                                                                                 \
    }                                                                                     \
}

#ifdef _OPENMP
#define SOPHIA_THREAD_IDS nt = omp_get_num_threads(); t = omp_get_thread_num();
#else
#define SOPHIA_THREAD_IDS
#endif
SOPHIA_LOOP(float, sophia_update_f32)
SOPHIA_LOOP(double, sophia_update_f64)
"""
_NATIVE_SYMBOLS = {torch.float32: "sophia_update_f32", torch.float64: "sophia_update_f64"}
# Below this many elements a step runs on one thread (waking the pool costs more).
_PARALLEL_MIN = 1 << 16
_PTR = "Q" if ctypes.sizeof(ctypes.c_void_p) == 8 else "I"
_native_lib: object = None  # None: not built yet; False: no compiler could build it


def _build_native() -> ctypes.CDLL | None:
    """Compile (or load the cached) C loop; None (after a warning) when nothing builds it."""
    argtypes = [ctypes.c_int64, *[ctypes.c_void_p] * 6, ctypes.c_int]
    symbols = {name: (None, argtypes) for name in _NATIVE_SYMBOLS.values()}
    return load_c_functions(
        "sophia_update", _C_SOURCE, symbols,
        flags=SOPHIA_FLAGS, what="sophia_update_compiled", switch="TRAINFORGE_SOPHIA_NATIVE",
    )  # fmt: skip


def _get_native():
    """The C loop's library, or None: off with ``TRAINFORGE_SOPHIA_NATIVE=0`` or when no
    C compiler builds it (then the torch.compile'd loop runs every dtype)."""
    global _native_lib
    if os.environ.get("TRAINFORGE_SOPHIA_NATIVE", "1") == "0":
        return None
    if _native_lib is None:
        _native_lib = _build_native() or False
    return _native_lib or None


def native_cpu_loop() -> str | None:
    """The path of the built C loop that runs float32/float64 CPU tensors in
    :func:`sophia_update_compiled` (building it on first use), or None when it is off or
    could not be built (then the ``torch.compile``d loop runs them)."""
    lib = _get_native()
    return None if lib is None else lib._name


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


_compiled_one_pass = None


def _get_compiled_one_pass():
    global _compiled_one_pass
    if _compiled_one_pass is None:
        # dynamic=True: one kernel for every tensor size (per dtype).
        _compiled_one_pass = torch.compile(_one_pass, dynamic=True, fullgraph=True)
    return _compiled_one_pass


@contextlib.contextmanager
def _no_duck_shapes():
    """Trace with a symbol per size: by default equal sizes share one ("duck shapes"), and a
    tensor of 8 elements (the size of ``scalars``) would need a graph of its own. Only
    tracing reads the flag (a private one: without it, such sizes recompile, still
    correct). Set directly, as ``_config.patch`` costs ~20 us a call."""
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


def _run_native(lib, dtype, slots, values) -> None:
    """One C call for every (p, g, m, h) in ``slots`` (contiguous, on the CPU, ``dtype``)."""
    ptrs = array(_PTR, [t.data_ptr() for col in zip(*slots, strict=True) for t in col])
    start = array("q", [0])
    total = 0
    for slot in slots:
        total += slot[0].numel()
        start.append(total)
    scalars = array("d", values)
    threads = torch.get_num_threads() if total >= _PARALLEL_MIN else 1
    base, _ = ptrs.buffer_info()
    step = len(slots) * ptrs.itemsize
    getattr(lib, _NATIVE_SYMBOLS[dtype])(
        len(slots), base, base + step, base + 2 * step, base + 3 * step,
        start.buffer_info()[0], scalars.buffer_info()[0], threads,
    )  # fmt: skip


def _increment_versions(tensors: list[torch.Tensor]) -> None:
    try:  # one call for the list (newer torch)
        torch.autograd.graph.increment_version(tensors)
    except TypeError:  # pragma: no cover - older torch: one tensor a call
        for t in tensors:
            torch.autograd.graph.increment_version(t)


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
    """The update on lists of tensors, one fused pass per tensor, in place (read p, g, m,
    h; write p, m), the CPU counterpart of ``torch.optim.AdamW(fused=True)``.

    On CPU, contiguous float32 and float64 tensors (p, g, m and h of one dtype) run a C loop
    built once per machine with the system C compiler (cached in
    ``~/.cache/trainforge_kernels``, or ``$TRAINFORGE_KERNELS_CACHE``): one call per step
    and dtype for all tensors, split evenly over ``torch.get_num_threads()`` threads.
    Other contiguous tensors (bfloat16, float16, mixed dtypes, other devices, or every
    tensor when no C compiler works or ``TRAINFORGE_SOPHIA_NATIVE=0``) run a
    ``torch.compile``d loop, one tensor a call, compiled once per process, device and dtypes
    for all sizes (Inductor also caches it on disk); non-contiguous and one-element tensors
    in that case take :func:`sophia_update_reference`. Both loops compute the same thing
    (bit for bit), with two roundings where the eager reference has one: on CPU, ATen's
    ``add_(alpha=)`` is a fused multiply-add and the loops are compiled with
    ``-ffp-contract=off``, so ``m*beta1 + (1-beta1)*g`` and ``p*decay - lr*u`` round the
    product first (last-ulp differences, which can flip the sign of a near-zero ``m``).
    Raises ``RuntimeError`` naming the cause when the ``torch.compile``d loop is needed
    and fails (on CPU, Inductor needs a working C++ compiler).
    """
    if not len(params) == len(grads) == len(exp_avgs) == len(hessians):
        raise ValueError(
            "sophia_update_compiled: params, grads, exp_avgs and hessians must have the same "
            f"length, got {len(params)}, {len(grads)}, {len(exp_avgs)}, {len(hessians)}"
        )
    _check_numbers(lr, beta1, rho_bs, weight_decay, eps)
    lib = _get_native()
    native: dict[torch.dtype, list[tuple]] = {}
    groups: dict[tuple, list[list[torch.Tensor]]] = {}
    written: list[torch.Tensor] = []
    values = [lr, 1.0 - lr * weight_decay, beta1, 1.0 - beta1, rho_bs, eps,
              -1.0 if maximize else 1.0, 0.0 if clamp_hessian else -math.inf]  # fmt: skip
    with torch.no_grad():
        for slot in zip(params, grads, exp_avgs, hessians, strict=True):
            p, g, m, h = slot
            dt, shape = p.dtype, p.shape
            if (  # the common case, checked with few, cheap attribute reads
                lib is not None
                and dt in _NATIVE_SYMBOLS
                and g.dtype is dt and m.dtype is dt and h.dtype is dt
                and p.is_cpu and g.is_cpu and m.is_cpu and h.is_cpu
                and g.shape == shape and m.shape == shape and h.shape == shape
                and p.is_contiguous() and g.is_contiguous() and m.is_contiguous()
                and h.is_contiguous()
            ):  # fmt: skip
                if p.numel():
                    native.setdefault(dt, []).append(slot)
                continue
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
            groups.setdefault((p.device, p.dtype), []).append([_flat_alias(t) for t in slot])
            written += (p, m)  # the aliases have version counters of their own
        for dt, slots in native.items():
            _run_native(lib, dt, slots, values)
            # written behind autograd's back: bump p's and m's version counters, as an
            # in-place torch op would (autograd then still catches a stale saved tensor)
            _increment_versions([t for slot in slots for t in slot[::2]])
    if not groups:
        return
    try:
        fn = _get_compiled_one_pass()
        with torch.no_grad(), _no_duck_shapes():
            for (device, p_dtype), slots in groups.items():
                # The numbers in the compute dtype (fp32 for fp32 and lower): float64 numbers
                # would turn the whole loop into float64 arithmetic, 30% slower on CPU.
                compute = torch.promote_types(p_dtype, torch.float32)
                scalars = torch.tensor(values, device=device, dtype=compute)
                for slot in slots:
                    fn(*slot, scalars)
        _increment_versions(written)
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
