"""ShiftAddViT's binary linear-angular attention core as one fused CPU loop.

The attention of ``trainforge_shiftaddvit.AddLinearAttention`` after its input projections
(GATECH-EIC/ShiftAddViT:pvt/pvt_v2.py ``LinAngularAttention_ksh``, pvt/performer.py
``EcoformerQuant``), per batch row ``b`` and head ``h``, for ``qk`` and ``v`` ``[N, d]``::

    x     = qk / max(||qk||, 1e-12)                      # per token
    k     = max(||x||^2 + ||a||^2 - 2 x a^T, 0)          # [N, m], a: the anchors
    s     = max(mean(k), 1e-12)                          # over all N x m entries
    c     = [exp(-k / (2 s)) A^T - mvec A^T > 0]         # [N, nbits], {0, 1}
    o     = 0.5 v + (1/pi) c (c^T v)                     # linear in N: c^T v is nbits x d
    o     = o / max(||o||, 1e-12) + conv_k(v)            # per-head k-tap conv over tokens

written token-major as ``out [B, N, H * d]`` (the input of the output projection).

In eager torch this is about 25 ops per call, each a pass over ``[B, H, N, .]`` plus its
dispatch cost, and the ``(k x 1)`` grouped convolution over tokens runs as ``k`` shifted
multiply-adds (a ``Conv2d(H, H, (k, 1), groups=H)`` over ``[B, H, N, d]`` is a badly shaped
convolution with one or two heads). :func:`add_attention_cpu` runs the same arithmetic in one
C call with three passes over the tokens (distances; codes and the ``c^T v`` state; output),
built once per machine with the system C compiler on first use (cached as the Sophia loop in
:mod:`trainforge_kernels.sophia_update`, ``TRAINFORGE_KERNELS_CACHE``), parallel over token
chunks with OpenMP. It equals :func:`add_attention_reference` up to float rounding: other
summation orders, float32 ``exp`` from a Cephes-style polynomial (within a few ulp),
reductions of ``mean(k)`` in double. A code bit whose pre-threshold value is within rounding
of zero can therefore differ from the reference; the tests compare codes away from zero.
Partial sums are taken over fixed chunks of tokens and reduced in order, so the result does
not depend on the number of threads.

``TRAINFORGE_ADDATTN_NATIVE=0`` turns the C loop off (then :func:`add_attention_cpu` runs the
torch reference); :func:`native_add_attention` says which library is in use.
"""

from __future__ import annotations

import ctypes
import math
import os

import torch

from trainforge_kernels._native import VECTOR_FLAGS, load_c_functions

__all__ = ["add_attention_cpu", "add_attention_reference", "native_add_attention"]

_C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Tokens per tile. Passes 1 and 2 keep a tile's tokens in the vector lanes (the loops over
   t have this fixed trip count, so they vectorise); partial sums are per tile and reduced
   in tile order, so the result does not depend on the number of threads. */
#define CH 64

/* exp: Cephes expf (range reduction by ln 2, degree-6 polynomial) without calls or
   branches, so the loop around it vectorises (with -fno-trapping-math). The argument is
   clamped to [-87, 88]: below -87 it returns exp(-87) ~ 1.6e-38 (here the argument is
   -k / (2 mean k) <= 0, and e only enters a sum with weights of order one). NaN stays NaN. */
static inline float addattn_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float fn = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    const int32_t n = (int32_t)fn;
    float g = x - fn * 0.693359375f;
    g = g + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * g + 1.3981999507e-3f;
    p = p * g + 8.3334519073e-3f;
    p = p * g + 4.1665795894e-2f;
    p = p * g + 1.6666665459e-1f;
    p = p * g + 5.0000001201e-1f;
    p = p * g * g + g + 1.0f;
    const int32_t bits = (n + 127) * 8388608; /* (n + 127) << 23 */
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}
static inline double addattn_exp(double x) { return exp(x); }

#ifdef _OPENMP
#define ADDATTN_PRAGMA(x) _Pragma(#x)
#define ADDATTN_PARALLEL_FOR \
    ADDATTN_PRAGMA(omp parallel for schedule(static) num_threads(threads) if(threads > 1))
#define SIMD_SUM(s) ADDATTN_PRAGMA(omp simd reduction(+:s))
#define SIMD_LOOP _Pragma("omp simd")
#else
#define SIMD_LOOP
#define ADDATTN_PARALLEL_FOR
#define SIMD_SUM(s)
#endif

/* qk, v: row n of batch b at (b * bs + n * rs), head h at + h * d, unit stride inside.
   anchor [H, m, d], A [H, nb, m], mvec [H, m], w [H, kw], out [B, N, H * d] contiguous.
   Returns 0, or 1 when scratch memory could not be allocated. */
#define ADDATTN(T, NAME, EXPF, SQRT)                                                      \
/* one output row of one head; inlined with D a constant (32) or the runtime d */         \
static inline __attribute__((always_inline)) void NAME##_row(                             \
        const int64_t D, int64_t n, int64_t N, int64_t kw, uint64_t code,                  \
        const T *restrict sh, const T *restrict vb, int64_t v_rs, const T *restrict wh,   \
        T *restrict out_row) {                                                            \
    T o[D];                                                                               \
    const T *vn = vb + n * v_rs;                                                          \
    for (int64_t i = 0; i < D; i++) o[i] = 0;                                             \
    for (uint64_t cc = code; cc; cc &= cc - 1) {                                          \
        const T *sr = sh + (int64_t)__builtin_ctzll(cc) * D;                              \
        for (int64_t i = 0; i < D; i++) o[i] += sr[i];                                    \
    }                                                                                     \
    T ss = 0;                                                                             \
    SIMD_SUM(ss)                                                                          \
    for (int64_t i = 0; i < D; i++) {                                                     \
        o[i] = o[i] * (T)0.31830988618379067154 + (T)0.5 * vn[i];                         \
        ss += o[i] * o[i];                                                                \
    }                                                                                     \
    T nrm = SQRT(ss);                                                                     \
    nrm = nrm > (T)1e-12 ? nrm : (T)1e-12;                                                \
    for (int64_t i = 0; i < D; i++) o[i] = o[i] / nrm;                                    \
    const int64_t pad = kw / 2;                                                           \
    const int64_t jlo = n < pad ? pad - n : 0, jhi = n - pad + kw > N ? N - n + pad : kw; \
    const T *vs = vb + (n - pad) * v_rs;                                                  \
    for (int64_t j = jlo; j < jhi; j++) {                                                 \
        const T wj = wh[j], *vj = vs + j * v_rs;                                          \
        for (int64_t i = 0; i < D; i++) o[i] += vj[i] * wj;                               \
    }                                                                                     \
    for (int64_t i = 0; i < D; i++) out_row[i] = o[i];                                    \
}                                                                                         \
int NAME(int64_t B, int64_t N, int64_t H, int64_t d, int64_t m, int64_t nb, int64_t kw,   \
         const T *qk, int64_t qk_bs, int64_t qk_rs, const T *v, int64_t v_bs,              \
         int64_t v_rs, const T *anchor, const T *A, const T *mvec, const T *w, T *out,     \
         int threads) {                                                                   \
    const int64_t C = H * d, nc = (N + CH - 1) / CH;                                      \
    T *asq = malloc(sizeof(T) * (size_t)(H * m));                                         \
    T *bias = malloc(sizeof(T) * (size_t)(H * nb));       /* mvec A^T [H, nb] */          \
    T *kbuf = malloc(sizeof(T) * (size_t)(B * H * nc * m * CH)); /* [B, H, tile, m, CH] */ \
    uint64_t *codes = malloc(sizeof(uint64_t) * (size_t)(B * H * N));                     \
    double *ksum = calloc((size_t)(B * nc * H), sizeof(double));                          \
    T *part = calloc((size_t)(B * nc * H * nb * d), sizeof(T)); /* c^T v per tile */      \
    T *state = calloc((size_t)(B * H * nb * d), sizeof(T));                               \
    T *scale = malloc(sizeof(T) * (size_t)(B * H));                                       \
    int status = 0;                                                                       \
    if (!asq || !bias || !kbuf || !codes || !ksum || !part || !state || !scale) {         \
        status = 1;                                                                       \
        goto done;                                                                        \
    }                                                                                     \
    for (int64_t h = 0; h < H; h++) {                                                     \
        for (int64_t j = 0; j < m; j++) {                                                 \
            T s = 0;                                                                      \
            const T *aj = anchor + (h * m + j) * d;                                       \
            for (int64_t i = 0; i < d; i++) s += aj[i] * aj[i];                           \
            asq[h * m + j] = s;                                                           \
        }                                                                                 \
        for (int64_t r = 0; r < nb; r++) {                                                \
            T s = 0;                                                                      \
            for (int64_t j = 0; j < m; j++) s += mvec[h * m + j] * A[(h * nb + r) * m + j]; \
            bias[h * nb + r] = s;                                                         \
        }                                                                                 \
    }                                                                                     \
    /* pass 1: normalise, squared distances to the anchors (tokens in lanes), their sum */ \
    ADDATTN_PARALLEL_FOR                                                                  \
    for (int64_t item = 0; item < B * nc; item++) {                                       \
        const int64_t b = item / nc, c = item % nc, lo = c * CH;                          \
        const int64_t nt = N - lo < CH ? N - lo : CH;                                     \
        T *xt = malloc(sizeof(T) * (size_t)(d * CH)); /* the tile, transposed [d, CH] */  \
        if (!xt) { status = 1; continue; }                                                \
        for (int64_t h = 0; h < H; h++) {                                                 \
            T ss[CH], xsq[CH], ks[CH], acc[CH];                                           \
            for (int64_t t = 0; t < nt; t++) {                                            \
                const T *x = qk + b * qk_bs + (lo + t) * qk_rs + h * d;                   \
                for (int64_t i = 0; i < d; i++) xt[i * CH + t] = x[i];                    \
            }                                                                             \
            for (int64_t i = 0; i < d; i++)                                               \
                for (int64_t t = nt; t < CH; t++) xt[i * CH + t] = 0;                     \
            for (int64_t t = 0; t < CH; t++) { ss[t] = 0; xsq[t] = 0; ks[t] = 0; }        \
            for (int64_t i = 0; i < d; i++)                                               \
                for (int64_t t = 0; t < CH; t++) ss[t] += xt[i * CH + t] * xt[i * CH + t]; \
            for (int64_t t = 0; t < CH; t++) {                                            \
                const T nrm = SQRT(ss[t]);                                                \
                ss[t] = nrm > (T)1e-12 ? nrm : (T)1e-12;                                  \
            }                                                                             \
            for (int64_t i = 0; i < d; i++)                                               \
                for (int64_t t = 0; t < CH; t++) {                                        \
                    const T xn = xt[i * CH + t] / ss[t];                                  \
                    xt[i * CH + t] = xn;                                                  \
                    xsq[t] += xn * xn;                                                    \
                }                                                                         \
            T *kt = kbuf + ((b * H + h) * nc + c) * m * CH;                               \
            const T *ah = anchor + h * m * d;                                             \
            for (int64_t j = 0; j < m; j++) {                                             \
                for (int64_t t = 0; t < CH; t++) acc[t] = 0;                              \
                for (int64_t i = 0; i < d; i++) {                                         \
                    const T a = ah[j * d + i];                                            \
                    for (int64_t t = 0; t < CH; t++) acc[t] += a * xt[i * CH + t];        \
                }                                                                         \
                const T aj = asq[h * m + j];                                              \
                for (int64_t t = 0; t < CH; t++) {                                        \
                    T k = (xsq[t] + aj) - (T)2 * acc[t];                                  \
                    k = k > (T)0 ? k : (T)0;                                              \
                    kt[j * CH + t] = k;                                                   \
                    ks[t] += k;                                                           \
                }                                                                         \
            }                                                                             \
            double total = 0;                                                             \
            for (int64_t t = 0; t < nt; t++) total += (double)ks[t];                      \
            ksum[(b * nc + c) * H + h] = total;                                           \
        }                                                                                 \
        free(xt);                                                                         \
    }                                                                                     \
    if (status) goto done;                                                                \
    for (int64_t b = 0; b < B; b++)                                                       \
        for (int64_t h = 0; h < H; h++) {                                                 \
            double s = 0;                                                                 \
            for (int64_t c = 0; c < nc; c++) s += ksum[(b * nc + c) * H + h];             \
            T sig = (T)(s / (double)(N * m));                                             \
            sig = sig > (T)1e-12 ? sig : (T)1e-12;                                        \
            scale[b * H + h] = sig * (T)-2;                                               \
        }                                                                                 \
    /* pass 2: codes c = [exp(k / (-2 s)) A^T - mvec A^T > 0] and the tile's c^T v */    \
    ADDATTN_PARALLEL_FOR                                                                  \
    for (int64_t item = 0; item < B * nc; item++) {                                       \
        const int64_t b = item / nc, c = item % nc, lo = c * CH;                          \
        const int64_t nt = N - lo < CH ? N - lo : CH;                                     \
        for (int64_t h = 0; h < H; h++) {                                                 \
            const T s2 = scale[b * H + h];                                                \
            T *kt = kbuf + ((b * H + h) * nc + c) * m * CH;                               \
            T y[CH];                                                                      \
            uint64_t code[CH];                                                            \
            for (int64_t q = 0; q < m * CH; q++) kt[q] = EXPF(kt[q] / s2);                \
            for (int64_t t = 0; t < CH; t++) code[t] = 0;                                 \
            for (int64_t r = 0; r < nb; r++) {                                            \
                const T *Ar = A + (h * nb + r) * m;                                       \
                for (int64_t t = 0; t < CH; t++) y[t] = 0;                                \
                for (int64_t j = 0; j < m; j++) {                                         \
                    const T a = Ar[j];                                                    \
                    for (int64_t t = 0; t < CH; t++) y[t] += a * kt[j * CH + t];          \
                }                                                                         \
                const T br = bias[h * nb + r];                                            \
                for (int64_t t = 0; t < CH; t++)                                          \
                    code[t] |= (uint64_t)(y[t] - br > (T)0) << r;                         \
            }                                                                             \
            T *ph = part + ((b * nc + c) * H + h) * nb * d;                               \
            uint64_t *ch = codes + (b * H + h) * N + lo;                                  \
            for (int64_t t = 0; t < nt; t++) {                                            \
                ch[t] = code[t];                                                          \
                const T *vn = v + b * v_bs + (lo + t) * v_rs + h * d;                     \
                for (uint64_t cc = code[t]; cc; cc &= cc - 1) {                           \
                    T *pr = ph + (int64_t)__builtin_ctzll(cc) * d;                        \
                    for (int64_t i = 0; i < d; i++) pr[i] += vn[i];                       \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    for (int64_t b = 0; b < B; b++)                                                       \
        for (int64_t c = 0; c < nc; c++)                                                  \
            for (int64_t q = 0; q < H * nb * d; q++)                                      \
                state[b * H * nb * d + q] += part[(b * nc + c) * H * nb * d + q];         \
    /* pass 3: o = 0.5 v + (1/pi) c state, normalised, plus the token convolution */      \
    ADDATTN_PARALLEL_FOR                                                                  \
    for (int64_t item = 0; item < B * nc; item++) {                                       \
        const int64_t b = item / nc, c = item % nc, lo = c * CH;                          \
        const int64_t hi = lo + CH < N ? lo + CH : N;                                     \
        for (int64_t n = lo; n < hi; n++)                                                 \
            for (int64_t h = 0; h < H; h++) {                                             \
                const T *vb = v + b * v_bs + h * d;                                       \
                const T *sh = state + (b * H + h) * nb * d;                               \
                const uint64_t code = codes[(b * H + h) * N + n];                         \
                T *o = out + (b * N + n) * C + h * d;                                     \
                if (d == 32)                                                              \
                    NAME##_row(32, n, N, kw, code, sh, vb, v_rs, w + h * kw, o);           \
                else                                                                      \
                    NAME##_row(d, n, N, kw, code, sh, vb, v_rs, w + h * kw, o);            \
            }                                                                             \
    }                                                                                     \
done:                                                                                     \
    free(asq); free(bias); free(kbuf); free(codes); free(ksum); free(part); free(state);  \
    free(scale);                                                                          \
    return status;                                                                        \
}

ADDATTN(float, add_attention_f32, addattn_expf, sqrtf)
ADDATTN(double, add_attention_f64, addattn_exp, sqrt)
"""
_SYMBOLS = {torch.float32: "add_attention_f32", torch.float64: "add_attention_f64"}
_ENV = "TRAINFORGE_ADDATTN_NATIVE"
# Below this many token-heads the loop runs on one thread (waking the pool costs more).
_PARALLEL_MIN = 4096
_native_lib: object = None  # None: not built yet; False: no compiler could build it


_ARGTYPES = [
    *[ctypes.c_int64] * 7,
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
    ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
    *[ctypes.c_void_p] * 5,
    ctypes.c_int,
]  # fmt: skip


def _build_native() -> ctypes.CDLL | None:
    """Compile (or load the cached) C loop; None (after a warning) when nothing builds it."""
    symbols = {name: (ctypes.c_int, _ARGTYPES) for name in _SYMBOLS.values()}
    return load_c_functions(
        "add_attention", _C_SOURCE, symbols,
        flags=VECTOR_FLAGS, libs=("-lm",), what="add_attention_cpu", switch=_ENV,
    )  # fmt: skip


def _get_native():
    global _native_lib
    if os.environ.get(_ENV, "1") == "0":
        return None
    if _native_lib is None:
        _native_lib = _build_native() or False
    return _native_lib or None


def native_add_attention() -> str | None:
    """The path of the built C loop behind :func:`add_attention_cpu` (building it on first
    use), or None when it is off (``TRAINFORGE_ADDATTN_NATIVE=0``) or no C compiler could
    build it; then :func:`add_attention_cpu` runs :func:`add_attention_reference`."""
    lib = _get_native()
    return None if lib is None else lib._name


def _check(qk, v, anchor, A, mvec, conv_weight) -> tuple[int, int, int, int, int, int, int]:
    names = ("qk", "v", "anchor", "A", "mvec", "conv_weight")
    tensors = (qk, v, anchor, A, mvec, conv_weight)
    for name, t in zip(names, tensors, strict=True):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"add_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    if anchor.dim() != 3:
        raise ValueError(f"add_attention: anchor must be [H, m, d], got {tuple(anchor.shape)}")
    H, m, d = anchor.shape
    if qk.dim() != 3 or qk.shape[-1] != H * d:
        raise ValueError(
            f"add_attention: qk must be [B, N, H*d] = [B, N, {H * d}], got {tuple(qk.shape)}"
        )
    B, N, _ = qk.shape
    if tuple(v.shape) != tuple(qk.shape):
        raise ValueError(
            f"add_attention: v must have qk's shape {tuple(qk.shape)}, got {tuple(v.shape)}"
        )
    if A.dim() != 3 or A.shape[0] != H or A.shape[2] != m:
        raise ValueError(f"add_attention: A must be [H, nbits, m] = [{H}, nbits, {m}], got "
                         f"{tuple(A.shape)}")  # fmt: skip
    nb = A.shape[1]
    if not 1 <= nb <= 64:
        raise ValueError(f"add_attention: nbits must be in [1, 64], got {nb}")
    if tuple(mvec.shape) != (H, m):
        raise ValueError(f"add_attention: mvec must be [{H}, {m}], got {tuple(mvec.shape)}")
    if conv_weight.dim() != 2 or conv_weight.shape[0] != H or conv_weight.shape[1] % 2 == 0:
        raise ValueError(
            f"add_attention: conv_weight must be [{H}, k] with k odd, got "
            f"{tuple(conv_weight.shape)}"
        )
    if min(B, N, H, m, d) < 1:
        raise ValueError(f"add_attention: empty input, qk {tuple(qk.shape)}, anchor "
                         f"{tuple(anchor.shape)}")  # fmt: skip
    dtype, device = qk.dtype, qk.device
    if not dtype.is_floating_point:
        raise TypeError(f"add_attention: qk must be floating point, got {dtype}")
    for name, t in zip(names[1:], tensors[1:], strict=True):
        if t.dtype != dtype or t.device != device:
            raise TypeError(
                f"add_attention: {name} is {t.dtype} on {t.device}, qk is {dtype} on {device}"
            )
    return B, N, H, d, m, nb, conv_weight.shape[1]


def add_attention_reference(
    qk: torch.Tensor,
    v: torch.Tensor,
    anchor: torch.Tensor,
    A: torch.Tensor,
    mvec: torch.Tensor,
    conv_weight: torch.Tensor,
) -> torch.Tensor:
    """The attention core in plain torch, term by term as in the module docstring.

    Args:
        qk, v: ``[B, N, H * d]`` token-major queries/keys (before normalisation) and values.
        anchor: ``[H, m, d]`` KSH anchors; ``A``: ``[H, nbits, m]`` hashing weights;
            ``mvec``: ``[H, m]`` kernel-feature means; ``conv_weight``: ``[H, k]`` token
            convolution (k odd, zero padded), all of ``qk``'s dtype and device.

    Returns ``[B, N, H * d]``: the input of the output projection. Differentiable.
    """
    B, N, H, d, _, _, kw = _check(qk, v, anchor, A, mvec, conv_weight)
    x = qk.reshape(B, N, H, d).transpose(1, 2)  # [B, H, N, d]
    vh = v.reshape(B, N, H, d).transpose(1, 2)
    x = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)
    k = (
        x.pow(2).sum(-1, keepdim=True)
        + anchor.pow(2).sum(-1).unsqueeze(-2)
        - 2 * x @ anchor.transpose(-1, -2)
    ).clamp_min(0)
    sigma = k.mean((-1, -2), keepdim=True).clamp_min(1e-12)
    y = (torch.exp(-k / (2 * sigma)) - mvec.unsqueeze(-2)) @ A.transpose(-1, -2)
    c = (y > 0).to(qk.dtype)
    o = 0.5 * vh + (1.0 / math.pi) * (c @ (c.transpose(-1, -2) @ vh))
    o = o / torch.linalg.vector_norm(o, dim=-1, keepdim=True).clamp_min(1e-12)
    conv = torch.nn.functional.conv2d(
        vh, conv_weight.view(H, 1, kw, 1), padding=(kw // 2, 0), groups=H
    )
    return (o + conv).transpose(1, 2).reshape(B, N, H * d)


def add_attention_cpu(
    qk: torch.Tensor,
    v: torch.Tensor,
    anchor: torch.Tensor,
    A: torch.Tensor,
    mvec: torch.Tensor,
    conv_weight: torch.Tensor,
) -> torch.Tensor:
    """:func:`add_attention_reference` in one fused C call on float32/float64 CPU tensors
    without autograd (the same values up to float rounding; see the module docstring).

    ``qk`` and ``v`` may be strided views (such as the two halves of one stacked
    projection) as long as each head's ``d`` entries are contiguous. Falls back to the
    reference for other dtypes and devices, when a gradient is needed, or when the C loop
    is off or could not be built (:func:`native_add_attention`).
    """
    B, N, H, d, m, nb, kw = _check(qk, v, anchor, A, mvec, conv_weight)
    lib = None
    if (
        qk.dtype in _SYMBOLS
        and qk.device.type == "cpu"
        and not (
            torch.is_grad_enabled()
            and any(t.requires_grad for t in (qk, v, anchor, A, mvec, conv_weight))
        )
    ):
        lib = _get_native()
    if lib is None:
        return add_attention_reference(qk, v, anchor, A, mvec, conv_weight)
    if qk.stride(-1) != 1:
        qk = qk.contiguous()
    if v.stride(-1) != 1:
        v = v.contiguous()
    anchor, A, mvec, w = (t.contiguous() for t in (anchor, A, mvec, conv_weight))
    out = torch.empty(B, N, H * d, dtype=qk.dtype)
    threads = torch.get_num_threads() if B * N * H >= _PARALLEL_MIN else 1
    status = getattr(lib, _SYMBOLS[qk.dtype])(
        B, N, H, d, m, nb, kw,
        qk.data_ptr(), qk.stride(0), qk.stride(1),
        v.data_ptr(), v.stride(0), v.stride(1),
        anchor.data_ptr(), A.data_ptr(), mvec.data_ptr(), w.data_ptr(), out.data_ptr(),
        threads,
    )  # fmt: skip
    if status != 0:
        raise MemoryError("add_attention_cpu: the C loop could not allocate its scratch memory")
    return out
