"""Binary (Hamming-space) linear-angular attention computed with additions.

ShiftAddViT's "add" attention (GATECH-EIC/ShiftAddViT:pvt/pvt_v2.py ``LinAngularAttention_ksh``,
pvt/performer.py ``EcoformerQuant``, pvt/hashing/ksh.py ``KernelSH``):

1. one shared projection gives queries and keys ``qk`` (``to_qk``), another the values;
   ``qk`` is L2-normalised per head;
2. :class:`BinaryCoder` hashes ``qk`` to ``nbits`` {0,1} codes ``c``: kernel features against
   ``m`` anchors, ``kappa_j(x) = exp(-||x - a_j||^2 / (2 sigma)) - mvec_j`` (sigma the mean
   squared distance, recomputed per forward), then ``c = [kappa(x) . A_h,r > 0]``; ``A`` is fitted
   once by kernel-based supervised hashing (greedy per bit, SGD on a sigmoid relaxation; the
   supervision marks each token's ``topk`` most and least similar tokens);
3. ``out = 0.5 v + (1/pi) c (c^T v)``: both products have a binary operand, so they are sums of
   selected rows (additions, "MatAdd"); ``c^T v`` is an ``nbits x d`` state per head, so the cost
   is linear in the number of tokens; then ``out / ||out||``, plus a depthwise ``(9 x 1)``
   convolution of ``v`` over tokens, then the output projection.

Without autograd, on float32/float64 CPU tensors, steps 1-3 after the projections run as one
fused C call (``trainforge_kernels.add_attention_cpu``): the same values up to float rounding.

Deviation from the reference, on purpose: the released ``EcoformerQuant`` keeps "fitted" in a
Python flag, so every resume or evaluation refits ``A`` and the anchors on its first batch and
overwrites the loaded buffers. Here the flag is a saved buffer and fitting is explicit
(``fit="explicit"``) or happens on the first training batch (``fit="first_batch"``, the
reference's behaviour for a fresh run).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from trainforge_kernels.add_attention import add_attention_cpu, native_add_attention
from trainforge_kernels.binary_scores import binary_scores, pack_bits
from trainforge_shiftaddvit.shift import ShiftLinear, _has_hooks

__all__ = [
    "AddLinearAttention",
    "BinaryCoder",
    "binary_attention_reference",
    "linear_angular_attention",
]

logger = logging.getLogger(__name__)

NBITS = 16  # pvt/configs/pvt_v2/pvt_v2_b0_LinAngular.py nbits=16
ANCHORS = 25  # pvt_v2_b0_LinAngular.py m=25
TOPK = 10  # pvt_v2_b0_LinAngular.py topk=10
KSH_LR = 5e-4  # pvt/hashing/ksh.py KernelSH(learning_rate=0.0005)
KSH_MOMENTUM = 0.9  # KernelSH(momentum=0.9), Nesterov
KSH_ITERS = 100  # KernelSH(iteration_n=100)
DW_KERNEL = 9  # pvt/pvt_v2.py LinAngularAttention_ksh(res_kernel_size=9)
_MODES = ("ksh", "mean")
_FITS = ("first_batch", "explicit")


class _BinaryQuantizer(torch.autograd.Function):
    """``[y > 0]`` with the gradient passed where ``0 < y < 1`` (pvt/hashing/utils.py)."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return (y > 0).to(y.dtype)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * ((y > 0) & (y < 1)).to(g.dtype)


def _sq_dist(x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    # ||x||^2 + ||a||^2 - 2 x.a, clamped at 0: [B, H, N, d] x [1, H, m, d] -> [B, H, N, m]
    d = (
        x.pow(2).sum(-1, keepdim=True)
        + anchors.pow(2).sum(-1).unsqueeze(-2)
        - 2 * x @ anchors.transpose(-1, -2)
    )
    return d.clamp_min(0)


class BinaryCoder(nn.Module):
    """Hash per-head vectors ``[B, H, N, d]`` to {0,1} codes ``[B, H, N, nbits]``.

    Args:
        num_heads, head_dim: the shape of the vectors it codes.
        mode: ``"ksh"`` (kernel supervised hashing, the released LinAngular config) or
            ``"mean"`` (threshold each entry at the tensor mean, ``LinAngularAttention_binary``;
            then ``nbits == head_dim``).
        nbits, anchors, topk: KSH code length, kernel anchors and supervision size
            (reference defaults 16, 25, 10).
        fit: ``"first_batch"`` fits on the first batch seen in training mode;
            ``"explicit"`` requires a call to :meth:`fit`. The fitted state (``A``, anchors,
            ``mvec`` and the ``fitted`` flag) lives in buffers and survives ``state_dict``.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        mode: str = "ksh",
        nbits: int = NBITS,
        anchors: int = ANCHORS,
        topk: int = TOPK,
        fit: str = "first_batch",
        iters: int = KSH_ITERS,
        lr: float = KSH_LR,
    ) -> None:
        super().__init__()
        for name, v in (
            ("num_heads", num_heads),
            ("head_dim", head_dim),
            ("nbits", nbits),
            ("anchors", anchors),
            ("topk", topk),
            ("iters", iters),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BinaryCoder: {name} must be a positive int, got {v!r}")
        if mode not in _MODES:
            raise ValueError(f"BinaryCoder: mode must be one of {_MODES}, got {mode!r}")
        if fit not in _FITS:
            raise ValueError(f"BinaryCoder: fit must be one of {_FITS}, got {fit!r}")
        if nbits > 64:
            raise ValueError(f"BinaryCoder: nbits must be at most 64, got {nbits}")
        self.num_heads, self.head_dim, self.mode, self.fit_mode = num_heads, head_dim, mode, fit
        self.nbits = head_dim if mode == "mean" else nbits
        self.m, self.topk, self.iters, self.lr = anchors, topk, iters, lr
        self.register_buffer("A", torch.randn(num_heads, self.nbits, anchors))
        self.register_buffer("mvec", torch.zeros(1, num_heads, 1, anchors))
        self.register_buffer("anchor", torch.zeros(1, num_heads, anchors, head_dim))
        self.register_buffer("fitted", torch.tensor(mode == "mean"))
        self._terms: tuple | None = None  # cached functions of the fitted buffers
        self._fitted_key: tuple | None = None  # ((version, data_ptr), bool(fitted))

    def _is_fitted(self) -> bool:
        """Whether the codes are fitted (``mode="mean"`` needs no fit). The flag is a buffer;
        its Python value is cached per buffer version, so the check costs no tensor read."""
        f = self.fitted
        key = (f._version, f.data_ptr())
        if self._fitted_key is None or self._fitted_key[0] != key:
            self._fitted_key = (key, bool(f))
        return self._fitted_key[1]

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"BinaryCoder: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.num_heads or x.shape[3] != self.head_dim:
            raise ValueError(
                f"BinaryCoder: x must be [B, {self.num_heads}, N, {self.head_dim}], "
                f"got {tuple(x.shape)}"
            )

    def _kernel(self, x: torch.Tensor) -> torch.Tensor:
        k = _sq_dist(x, self.anchor)
        sigma = k.mean((-1, -2), keepdim=True).clamp_min(1e-12)
        return torch.exp(-k / (2 * sigma)) - self.mvec

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> list[float]:
        """Fit anchors, ``mvec`` and ``A`` on ``x [B, H, N, d]`` by kernel supervised hashing
        (pvt/hashing/ksh.py ``train_hashing_weight_woeig``); returns the discrete loss of each
        bit. The anchors are ``anchors`` random tokens of the first sample (of the whole batch
        when a sample has fewer tokens than anchors, a case the reference does not handle)."""
        self._check(x)
        if self.mode == "mean":
            return []
        x = x.detach().to(self.A.dtype)
        B, H, N, _ = x.shape
        if self.m > B * N:
            raise ValueError(
                f"BinaryCoder.fit: needs at least anchors={self.m} tokens in the batch, "
                f"got B*N={B * N}"
            )
        if 2 * self.topk > N:
            raise ValueError(
                f"BinaryCoder.fit: topk={self.topk} most and least similar tokens need "
                f"N >= {2 * self.topk}, got N={N}"
            )
        sim = x @ x.transpose(-1, -2)
        top = sim.topk(self.topk, dim=3).indices  # S = +1 there
        bottom = sim.topk(self.topk, dim=3, largest=False).indices  # S = -1 there
        del sim
        if self.m <= N:  # the reference: random tokens of the first sample
            self.anchor.copy_(x[:1, :, torch.randperm(N, device=x.device)[: self.m]])
        else:  # short sequences (small images): random tokens of the whole batch
            pooled = x.transpose(0, 1).reshape(1, H, B * N, -1)
            self.anchor.copy_(pooled[:, :, torch.randperm(B * N, device=x.device)[: self.m]])
        k = _sq_dist(x, self.anchor)
        sigma = k.mean((-1, -2), keepdim=True).clamp_min(1e-12)
        k = torch.exp(-k / (2 * sigma))
        self.mvec.copy_(k.mean(-2, keepdim=True).mean(0, keepdim=True))
        K = k - self.mvec
        flat_top, flat_bottom = top.flatten(2), bottom.flatten(2)
        chosen: list[torch.Tensor] = []  # the +-1 codes of the bits fitted so far

        def loss_of(y: torch.Tensor) -> torch.Tensor:
            # KernelSH.compute_loss, -(y^T S y) / (N nbits) averaged over (b, h), with the
            # residual S = nbits * S0 - sum_j y_j y_j^T evaluated without the N x N matrix:
            # y^T S0 y through the 2 * topk supervised pairs per token, and sum_j (y_j . y)^2.
            y_top = torch.gather(y, 2, flat_top).view(B, H, N, self.topk).sum(-1)
            y_bot = torch.gather(y, 2, flat_bottom).view(B, H, N, self.topk).sum(-1)
            quad = self.nbits * (y * (y_top - y_bot)).sum(-1)
            for yj in chosen:
                quad = quad - (yj * y).sum(-1) ** 2
            return (-quad / (N * self.nbits)).mean()

        losses = []
        for r in range(self.nbits):
            a_old = self.A[:, r, :].clone()
            a = a_old.clone().requires_grad_(True)
            opt = torch.optim.SGD([a], lr=self.lr, momentum=KSH_MOMENTUM, nesterov=True)
            with torch.enable_grad():
                for _ in range(self.iters):
                    y = 2 * torch.sigmoid(torch.einsum("bhnm,hm->bhn", K, a)) - 1
                    loss = loss_of(y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            a = a.detach()
            if not torch.isfinite(a).all():
                raise FloatingPointError("BinaryCoder.fit: the hashing weights became non-finite")
            y_old = torch.where(torch.einsum("bhnm,hm->bhn", K, a_old) > 0, 1.0, -1.0).to(K.dtype)
            y_new = torch.where(torch.einsum("bhnm,hm->bhn", K, a) > 0, 1.0, -1.0).to(K.dtype)
            l_old, l_new = loss_of(y_old), loss_of(y_new)
            keep_new = bool(l_new < l_old)
            self.A[:, r, :] = a if keep_new else a_old
            chosen.append(y_new if keep_new else y_old)
            losses.append(float(min(l_new, l_old)))
        self.fitted.fill_(True)
        logger.info("BinaryCoder: fitted %d-bit KSH codes on %d tokens", self.nbits, N)
        return losses

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.mode == "mean":
            # LinAngularAttention_binary: [x > mean] forward, clamp(x, 0, 1) gradient
            hard = (x > x.mean()).to(x.dtype)
            soft = x.clamp(0, 1)
            return hard.detach() - soft.detach() + soft
        if not self._is_fitted():
            if self.fit_mode == "explicit" or not self.training:
                raise RuntimeError(
                    "BinaryCoder is not fitted: call .fit(x) on a batch of normalised "
                    "queries/keys first (or use fit='first_batch' and a training batch)"
                )
            self.fit(x)
        y = self._project(x)
        if not (torch.is_grad_enabled() and y.requires_grad):
            return y.gt_(0)  # {0, 1} in place, no new tensor
        return _BinaryQuantizer.apply(y)

    def _fitted_terms(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``anchor^T [1, H, d, m]``, ``||a||^2 [1, H, 1, m]``, ``A^T [H, m, nbits]`` and
        ``mvec . A [1, H, 1, nbits]``: they depend on the fitted buffers only, so they are
        cached per buffer version (without autograd)."""
        bufs = (self.anchor, self.A, self.mvec)
        key = (dtype, *((t._version, t.data_ptr(), t.device) for t in bufs))
        if self._terms is None or self._terms[0] != key:
            with torch.no_grad():
                anchor, a_t = self.anchor.to(dtype), self.A.to(dtype).transpose(-1, -2)
                terms = (
                    anchor.transpose(-1, -2),
                    anchor.pow(2).sum(-1).unsqueeze(-2),
                    a_t,
                    self.mvec.to(dtype) @ a_t,
                )
            self._terms = (key, terms)
        return self._terms[1]

    def _apply(self, fn, recurse=True):
        self._terms = None
        self._fitted_key = None
        return super()._apply(fn, recurse)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        """The code projections ``y = (kappa(x) - mvec) . A`` (``[B, H, N, nbits]``; bit = [y > 0]).

        Computed as ``exp(-k / (2 sigma)) . A - mvec . A`` with ``k`` from one matmul against
        the anchors: the same values as :meth:`_kernel` then ``einsum`` up to float rounding,
        in about half the operations (in place when no gradient is needed)."""
        inplace = not (torch.is_grad_enabled() and (x.requires_grad or self.A.requires_grad))
        anchor_t, a_sq, a_t, bias = self._fitted_terms(x.dtype)
        x_sq = x.pow(2).sum(-1, keepdim=True)  # [B, H, N, 1]
        if inplace:  # fused: k = (||x||^2 + ||a||^2) - 2 x a^T and y = e A^T - mvec A^T
            B, H, N, d = x.shape
            m, nbits = a_t.shape[-2:]
            k = torch.baddbmm(
                (x_sq + a_sq).view(B * H, N, m),
                x.reshape(B * H, N, d),
                anchor_t.expand(B, H, d, m).reshape(B * H, d, m),
                alpha=-2.0,
            ).clamp_min_(0)
            k = k.view(B, H, N, m)
            sigma = k.mean((-1, -2), keepdim=True).clamp_min_(1e-12).mul_(-2.0)
            e = k.div_(sigma).exp_().view(B * H, N, m)
            y = torch.baddbmm(
                bias.expand(B, H, 1, nbits).reshape(B * H, 1, nbits),
                e,
                a_t.expand(B, H, m, nbits).reshape(B * H, m, nbits),
                alpha=1.0,
                beta=-1.0,
            )
            return y.view(B, H, N, nbits)
        k = (x_sq + a_sq - 2 * (x @ anchor_t)).clamp_min(0)
        sigma = k.mean((-1, -2), keepdim=True).clamp_min(1e-12)
        return torch.exp(-k / (2 * sigma)) @ a_t - bias


def linear_angular_attention(codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``0.5 v + (1/pi) c (c^T v)`` for {0,1} codes ``c [.., N, b]`` and values ``v [.., N, d]``.

    Linear in ``N``: the ``c^T v`` state is ``b x d``. Both products take a binary operand, so
    they are masked sums (the released "MatAdd"); here they run as matmuls with a {0,1}
    matrix, which is exact up to float summation order.
    """
    if not isinstance(codes, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError("linear_angular_attention: codes and v must be torch.Tensors")
    if codes.dim() < 2 or codes.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"linear_angular_attention: codes [.., N, b] and v [.., N, d] must share leading "
            f"dims, got {tuple(codes.shape)} and {tuple(v.shape)}"
        )
    state = codes.transpose(-1, -2) @ v  # [.., b, d]
    return 0.5 * v + (1.0 / math.pi) * (codes @ state)


def binary_attention_reference(codes: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same output through the quadratic form: integer scores ``c c^T`` from the packed
    AND/popcount kernel (``trainforge_kernels.binary_scores``), then ``0.5 v + (1/pi) S v``."""
    if not isinstance(codes, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError("binary_attention_reference: codes and v must be torch.Tensors")
    if codes.dim() < 2 or codes.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"binary_attention_reference: codes and v must share leading dims, got "
            f"{tuple(codes.shape)} and {tuple(v.shape)}"
        )
    packed = pack_bits(codes.detach() > 0.5)
    scores = binary_scores(packed, packed, codes.shape[-1], mode="and")
    return 0.5 * v + (1.0 / math.pi) * (scores.to(v.dtype) @ v)


class AddLinearAttention(nn.Module):
    """ShiftAddViT's binary linear-angular attention (``LinAngularAttention_ksh``).

    Args:
        dim, num_heads: model width and heads (``dim % num_heads == 0``).
        qkv_bias: bias of ``to_qk`` / ``to_v``.
        coder: a :class:`BinaryCoder` for ``[B, H, N, dim / H]``, or None for a KSH coder
            with the reference defaults.
        dw_kernel: the depthwise token convolution on ``v`` (odd, default 9).

    ``forward(x, *args)`` takes ``x [B, N, dim]`` and ignores extra positional arguments
    (timm's PVTv2 passes the feature size), so it drops into timm ViT and PVTv2 blocks.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        coder: BinaryCoder | None = None,
        dw_kernel: int = DW_KERNEL,
        proj_bias: bool = True,
    ) -> None:
        super().__init__()
        for name, val in (("dim", dim), ("num_heads", num_heads), ("dw_kernel", dw_kernel)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"AddLinearAttention: {name} must be a positive int, got {val!r}")
        if dim % num_heads:
            raise ValueError(
                f"AddLinearAttention: dim={dim} must be divisible by num_heads={num_heads}"
            )
        if dw_kernel % 2 == 0:
            raise ValueError(f"AddLinearAttention: dw_kernel must be odd, got {dw_kernel}")
        head_dim = dim // num_heads
        if coder is None:
            coder = BinaryCoder(num_heads, head_dim)
        if not isinstance(coder, BinaryCoder):
            raise TypeError(f"AddLinearAttention: coder must be a BinaryCoder, got {coder!r}")
        if (coder.num_heads, coder.head_dim) != (num_heads, head_dim):
            raise ValueError(
                f"AddLinearAttention: coder codes {coder.num_heads} heads of {coder.head_dim}, "
                f"the attention has {num_heads} heads of {head_dim}"
            )
        self.dim, self.num_heads, self.head_dim = dim, num_heads, head_dim
        self.to_qk = nn.Linear(dim, dim, bias=qkv_bias)
        self.to_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.coder = coder
        self.dconv = nn.Conv2d(
            num_heads,
            num_heads,
            kernel_size=(dw_kernel, 1),
            padding=(dw_kernel // 2, 0),
            groups=num_heads,
            bias=False,
        )
        nn.init.normal_(self.dconv.weight, 0.0, math.sqrt(2.0 / dw_kernel))  # Block._init_weights
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self._fused: tuple | None = None  # (key, stacked to_qk/to_v weight, bias)

    def _qk_v(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``to_qk(x)`` and ``to_v(x)``: one GEMM against the stacked weights when both are
        plain ``nn.Linear`` and no gradient is needed (the stacked copy is cached per weight
        version), two calls otherwise."""
        qk_lin, v_lin = self.to_qk, self.to_v
        if (
            not torch.is_grad_enabled()
            and type(qk_lin) is ShiftLinear
            and type(v_lin) is ShiftLinear
            and qk_lin.act_fraction_bits == v_lin.act_fraction_bits
            and (qk_lin.bias is None) == (v_lin.bias is None)
            and not _has_hooks(qk_lin)
            and not _has_hooks(v_lin)
        ):  # one fixed-point rounding of x and one GEMM against the stacked shift weights
            w_qk, b_qk = qk_lin._weight_operands()
            w_v, b_v = v_lin._weight_operands()
            key = (qk_lin._operands[0], v_lin._operands[0])
            if self._fused is None or self._fused[0] != key:
                b = None if b_qk is None else torch.cat([b_qk, b_v])
                self._fused = (key, torch.cat([w_qk, w_v]), b)
            _, w, b = self._fused
            xi, _, _ = qk_lin.gemm_operands(x)
            y = nn.functional.linear(xi, w.to(x.dtype), None if b is None else b.to(x.dtype))
            return y[..., : self.dim], y[..., self.dim :]
        if (
            torch.is_grad_enabled()
            or type(qk_lin) is not nn.Linear
            or type(v_lin) is not nn.Linear
            or (qk_lin.bias is None) != (v_lin.bias is None)
            or _has_hooks(qk_lin)
            or _has_hooks(v_lin)
        ):
            return qk_lin(x), v_lin(x)
        params = (qk_lin.weight, v_lin.weight, qk_lin.bias, v_lin.bias)
        tensors = [t for t in params if t is not None]
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors)
        if self._fused is None or self._fused[0] != key:
            w = torch.cat([qk_lin.weight, v_lin.weight]).detach()
            b = None if qk_lin.bias is None else torch.cat([qk_lin.bias, v_lin.bias]).detach()
            self._fused = (key, w, b)
        _, w, b = self._fused
        y = nn.functional.linear(x, w.to(x.dtype), None if b is None else b.to(x.dtype))
        return y[..., : self.dim], y[..., self.dim :]

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised shared query/key ``[B, H, N, d]`` and values ``[B, H, N, d]`` (views of
        the token-major projections: no copies)."""
        B, N, _ = x.shape
        qk, v = self._qk_v(x)
        qk = qk.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
        norm = torch.linalg.vector_norm(qk, dim=-1, keepdim=True)
        if torch.is_grad_enabled() and norm.requires_grad:
            return qk / norm.clamp_min(1e-12), v
        return qk / norm.clamp_min_(1e-12), v

    def token_conv(self, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``self.dconv(v)`` (the per-head ``k x 1`` convolution over tokens, zero padded) as
        ``k`` shifted multiply-adds: the same result, and on CPU about 3.5x faster than
        the grouped ``Conv2d`` (which took half of the module's time at 3,136 tokens).
        With ``out`` (no autograd) the convolution is added to ``out`` in place."""
        k = self.dconv.kernel_size[0]
        n = v.shape[-2]
        w = self.dconv.weight.to(v.dtype).view(-1, k).t().unsqueeze(-1).unsqueeze(-1)  # [k,H,1,1]
        vp = nn.functional.pad(v, (0, 0, k // 2, k // 2))
        start = 0
        if out is None:
            out = vp[:, :, 0:n] * w[0]
            start = 1
        for j in range(start, k):  # in place: no intermediate tensors (autograd-safe, see mul)
            out.addcmul_(vp[:, :, j : j + n], w[j])
        return out

    def forward(self, x: torch.Tensor, *args, attn_mask: torch.Tensor | None = None, **kwargs):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"AddLinearAttention: x must be [B, N, {self.dim}], got {shape}")
        if attn_mask is not None:
            raise ValueError("AddLinearAttention: attention masks are not supported")
        B, N, C = x.shape
        if self._use_native(x):
            qk, v = self._qk_v(x)
            coder, H = self.coder, self.num_heads
            out = add_attention_cpu(
                qk,
                v,
                coder.anchor.reshape(H, coder.m, self.head_dim),
                coder.A,
                coder.mvec.reshape(H, coder.m),
                self.dconv.weight.reshape(H, -1),
            )
            return self.proj(out)
        qk, v = self.heads(x)
        codes = self.coder(qk)
        if torch.is_grad_enabled() and (codes.requires_grad or v.requires_grad):
            out = linear_angular_attention(codes, v)
            out = out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out = out + self.token_conv(v)
        else:  # the same arithmetic in place: fewer passes over [B, H, N, d] and no temporaries
            out = (codes @ (codes.transpose(-1, -2) @ v)).mul_(1.0 / math.pi).add_(v, alpha=0.5)
            out = out.div_(torch.linalg.vector_norm(out, dim=-1, keepdim=True).clamp_min_(1e-12))
            self.token_conv(v, out=out)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))

    def _use_native(self, x: torch.Tensor) -> bool:
        """Whether the no-autograd forward runs the fused C loop
        (``trainforge_kernels.add_attention_cpu``): a fitted KSH coder, float32/float64 CPU
        tensors whose dtype the coder's buffers and the token convolution share, no gradient
        needed, no hooks on the coder or the convolution (hook-based counters see every call),
        and the loop built (``TRAINFORGE_ADDATTN_NATIVE=0`` turns it off)."""
        coder, w = self.coder, self.dconv.weight
        if (
            x.device.type != "cpu"
            or x.dtype not in (torch.float32, torch.float64)
            or coder.mode != "ksh"
            or coder.A.dtype != x.dtype
            or coder.anchor.dtype != x.dtype
            or coder.mvec.dtype != x.dtype
            or w.dtype != x.dtype
            or (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            or _has_hooks(coder)
            or _has_hooks(self.dconv)
            or not coder._is_fitted()
        ):
            return False
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters(recurse=True)):
            return False
        return native_add_attention() is not None

    def _apply(self, fn, recurse=True):
        self._fused = None
        return super()._apply(fn, recurse)
