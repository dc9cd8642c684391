"""PELA step 1: replace ``nn.Linear`` layers by two thin ones initialised from a truncated SVD.

A Linear ``y = W x + b`` with ``W`` of shape ``(m, n)`` (out, in) becomes
``y = B (A x) + b`` with ``A = Σ_r^{1/2} V_rᵀ`` (``r x n``, no bias) and
``B = U_r Σ_r^{1/2}`` (``m x r``, the original bias), the rank chosen so that the two factors
hold ``1/ratio`` of the original weights: ``r = ⌊m·n / (ratio·(m+n))⌋``
(``guoyang9/PELA:DeiT/low_rank.py``, ``ModuleLowRank._apply``). By Eckart–Young the product
``BA`` is the best rank-``r`` approximation of ``W`` and its squared Frobenius error is the sum
of the dropped squared singular values.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_core.surgery import count_parameters

logger = logging.getLogger(__name__)

DEFAULT_SKIP: tuple[str, ...] = ("norm", "head", "patch_embed", "downsample")
"""Names containing one of these are never compressed (``guoyang9/PELA:DeiT/main.py``,
``name_omit=['norm', 'head', 'patch_embed', 'downsample']``)."""
DEFAULT_MIN_OUT_FEATURES = 10
"""Layers with fewer outputs than this are kept (``DeiT/low_rank.py``: "for some head matrix,
such as image-text match head")."""

Init = Literal["svd", "none"]
_INITS = ("svd", "none")

DEFAULT_INFERENCE_PAD = 16
"""Default :attr:`LowRankLinear.inference_pad`: at CPU inference the first factor runs with
its weight zero-padded to a multiple of 16 rows (the 16-float AVX-512 vector), so the
intermediate has a SIMD-friendly width; the rank, parameters and state dict are unchanged."""


_MAX_PAD_SHARE = 8
"""Padding runs only when it adds at most ``rank / 8`` rows (204 -> 208, 307 -> 320 and 409 ->
416 do; 17 -> 32 or 10 -> 16 do not: at such small ranks the extra rows cost 2-7% per layer
and the width saves nothing, one thread)."""


def _check_inference_pad(pad: object) -> int:
    if isinstance(pad, bool) or not isinstance(pad, int):
        raise TypeError(f"inference_pad must be an int >= 1, got {pad!r}")
    if pad < 1:
        raise ValueError(f"inference_pad must be >= 1 (1 = no padding), got {pad}")
    return pad


def _hooked(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones)."""
    from torch.nn.modules import module as module_mod

    return bool(
        getattr(module_mod, "_global_forward_hooks", None)
        or getattr(module_mod, "_global_forward_pre_hooks", None)
        or module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
    )


def _tracing() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch.compiler.is_compiling():
        return True
    from torch.fx import _symbolic_trace

    check = getattr(_symbolic_trace, "is_fx_symbolic_tracing", None)
    if check is None:  # pragma: no cover - older torch
        check = getattr(_symbolic_trace, "is_fx_tracing", lambda: False)
    return bool(check())


class LowRankLinear(nn.Sequential):
    """``Sequential(Linear(n→r, bias=False), Linear(r→m))``: a Linear of rank ``r``.

    A subclass of :class:`nn.Sequential` so that its state-dict keys are the reference's
    (``<name>.0.weight``, ``<name>.1.weight``, ``<name>.1.bias``). ``weight`` and ``bias``
    read like an ``nn.Linear``'s (``weight`` is the product ``BA``, differentiable), so code
    that calls ``F.linear(x, layer.weight, ...)`` keeps working.

    ``inference_pad`` (not in the reference; default 16, ``1`` turns it off): in eval mode on
    the CPU, when no gradient flows to the first factor (``torch.no_grad()``,
    ``torch.inference_mode()`` or a frozen factor), a rank that is not a multiple of
    ``inference_pad`` runs the first factor with a zero-padded copy of its weight (``ceil(r /
    pad) * pad`` rows, only where that adds at most ``r / 8`` rows) and feeds the second factor
    the strided view of the first ``r`` columns (no copy). The result is the same function (the
    extra rows are zeros, their outputs are never read); only the GEMM width changes: ViT-B's
    rank 204 (ratio 3) is a slow width for ``x @ Aᵀ`` on AVX-512, 208 is not. The padded copy is
    a cache (a plain attribute, never in the state dict or the parameters), rebuilt when the
    weight changes (its version counter, data pointer, dtype or device), and dropped by
    ``.train()``/``.eval()``, ``.to()``/``.half()``/..., ``load_state_dict`` and pickling. It
    costs ``(padded rank) x in_features`` elements of memory per layer while held. Writes that
    bypass autograd's version counter (``layer[0].weight.data.copy_(...)``) are not seen until
    one of those events or :meth:`clear_inference_cache`. The plain ``Sequential`` path runs
    instead in training mode, with gradients to the first factor, off the CPU, under
    ``torch.compile`` / ``jit`` / ``fx`` tracing, when a factor has hooks or is not a plain
    ``nn.Linear``, or for an inference tensor weight.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        inference_pad: int = DEFAULT_INFERENCE_PAD,
    ) -> None:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(rank, int) or not rank >= 1:
            raise ValueError(f"rank must be an int >= 1, got {rank!r}")
        super().__init__(
            nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype),
            nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype),
        )
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.inference_pad = _check_inference_pad(inference_pad)
        self._pad_cache: tuple[tuple[object, ...], torch.Tensor] | None = None

    def clear_inference_cache(self) -> None:
        """Drop the zero-padded copy of the first factor's weight (see the class doc)."""
        self._pad_cache = None

    def _padded_first_weight(self) -> torch.Tensor | None:
        """The first factor's weight zero-padded to a multiple of ``inference_pad`` rows,
        cached; ``None`` when the plain path must run."""
        pad, rank = self.inference_pad, self.rank
        first, second = self[0], self[1]
        if pad <= 1 or rank % pad == 0 or self.training or _tracing():
            return None
        padded_rank = -(-rank // pad) * pad
        if (padded_rank - rank) * _MAX_PAD_SHARE > rank:
            return None  # small rank: the extra rows would cost more than the width saves
        if type(first) is not nn.Linear or type(second) is not nn.Linear:
            return None
        a = first.weight
        if a.device.type != "cpu" or a.shape[0] != rank or first.bias is not None:
            return None
        if torch.is_grad_enabled() and a.requires_grad:
            return None
        if _hooked(first) or _hooked(second):
            return None
        if a.is_inference():  # no version counter to key the cache on
            return None
        key = (a._version, a.data_ptr(), a.dtype, a.device, a.stride(), padded_rank)
        cached = self._pad_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            padded = a.new_zeros((padded_rank, a.shape[1]))
            padded[:rank].copy_(a)
        self._pad_cache = (key, padded)
        return padded

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        padded = self._padded_first_weight()
        if padded is None or x.dim() == 0 or x.shape[-1] != self.in_features:
            return super().forward(x)
        second = self[1]
        h = F.linear(x.reshape(-1, self.in_features), padded)
        out = F.linear(h[:, : self.rank], second.weight, second.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def train(self, mode: bool = True) -> LowRankLinear:
        self._pad_cache = None
        return super().train(mode)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def,override]
        self._pad_cache = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._pad_cache = None
        return super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state = dict(state)
        state["_pad_cache"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        # modules pickled by trainforge-pela < 0.3 have neither attribute
        self.__dict__.setdefault("inference_pad", DEFAULT_INFERENCE_PAD)
        self.__dict__.setdefault("_pad_cache", None)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The rank-``r`` product ``BA`` (out x in)."""
        return self[1].weight @ self[0].weight

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        return self[1].bias

    def merge(self) -> nn.Linear:
        """One ``nn.Linear`` computing the same function (for export)."""
        first, second = self[0], self[1]
        out = nn.Linear(
            self.in_features,
            self.out_features,
            bias=second.bias is not None,
            device=first.weight.device,
            dtype=first.weight.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(second.weight @ first.weight)
            if second.bias is not None:
                out.bias.copy_(second.bias)
        return out

    def extra_repr(self) -> str:
        pad = f", inference_pad={self.inference_pad}" if self.inference_pad != 1 else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}{pad}"
        )


def rank_for_ratio(m: int, n: int, ratio: float, *, multiple: int = 1) -> int:
    """``⌊m·n / (ratio·(m+n))⌋``: the rank at which two factors hold ``1/ratio`` of an
    ``m x n`` matrix's entries (``guoyang9/PELA:DeiT/low_rank.py``).

    ``multiple > 1`` (not in the reference) rounds that rank *down* to a multiple of
    ``multiple``, so the factors hold at most ``1/ratio`` of the entries and the thin GEMMs
    get SIMD-friendly widths; a rank below ``multiple`` is returned unrounded (rounding would
    give 0).
    """
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    _check_ratio(ratio)
    _check_multiple(multiple)
    rank = math.floor(m * n / (ratio * (m + n)))
    if multiple > 1 and rank >= multiple:
        rank -= rank % multiple
    return rank


def _check_multiple(multiple: object) -> None:
    if isinstance(multiple, bool) or not isinstance(multiple, int):
        raise TypeError(f"rank_multiple must be an int >= 1, got {multiple!r}")
    if multiple < 1:
        raise ValueError(f"rank_multiple must be >= 1 (1 = the reference's rank), got {multiple}")


def low_rank_factors(
    weight: torch.Tensor, rank: int, *, svd_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated SVD split ``W ≈ B @ A`` with the singular values shared as ``Σ^{1/2}``.

    Returns ``(A, B, S)``: ``A`` is ``rank x n``, ``B`` is ``m x rank`` (both in ``weight``'s
    dtype and device) and ``S`` all singular values of ``W`` (descending, in ``svd_dtype``).
    The SVD runs in ``svd_dtype`` (default: float32, or float64 for a float64 weight).
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(
            f"weight must be a 2-D tensor, got {type(weight).__name__}"
            + (f" of shape {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else "")
        )
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got dtype {weight.dtype}")
    m, n = weight.shape
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(m, n):
        raise ValueError(
            f"rank must be an int in [1, {min(m, n)}] for a {m}x{n} weight, got {rank!r}"
        )
    if svd_dtype is None:
        svd_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach().to(svd_dtype)
    if not torch.isfinite(w).all():
        raise ValueError("weight has non-finite entries; cannot take its SVD")
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]  # Σ^{1/2} Vᵀ
    b = u[:, :rank] * root[None, :]  # U Σ^{1/2}
    return a.to(weight.dtype), b.to(weight.dtype), s


@dataclass(frozen=True)
class CompressedLayer:
    """One Linear replaced by :func:`compress_linear_layers`."""

    name: str
    in_features: int
    out_features: int
    rank: int
    params_before: int
    params_after: int
    #: ``‖W − BA‖_F²`` right after the SVD initialisation (NaN with ``init="none"``).
    init_error: float
    #: ``init_error / ‖W‖_F²``.
    relative_error: float


@dataclass
class CompressionReport:
    """What :func:`apply_pela` changed."""

    ratio: float
    layers: list[CompressedLayer] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    #: The ``rank_multiple`` the ranks were rounded down to (1: the reference's rule).
    rank_multiple: int = 1

    @property
    def achieved_ratio(self) -> float:
        """Whole-model parameters before / after."""
        return self.params_before / self.params_after if self.params_after else float("nan")

    def __str__(self) -> str:
        lines = [
            f"PELA compression at ratio {self.ratio:g}"
            + (
                f" (ranks rounded down to multiples of {self.rank_multiple})"
                if self.rank_multiple > 1
                else ""
            )
            + f": {len(self.layers)} Linear layers replaced, "
            f"{len(self.skipped)} kept; parameters {self.params_before:,} -> {self.params_after:,} "
            f"({self.achieved_ratio:.2f}x)"
        ]
        for c in self.layers:
            lines.append(
                f"  {c.name}: {c.out_features}x{c.in_features} -> rank {c.rank} "
                f"({c.params_before:,} -> {c.params_after:,} params, "
                f"relative init error {c.relative_error:.3g})"
            )
        return "\n".join(lines)


def _check_ratio(ratio: float) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio):
        raise TypeError(f"ratio must be a finite number > 1, got {ratio!r}")
    if ratio <= 1:
        raise ValueError(
            f"ratio must be > 1 (parameters shrink to 1/ratio); ratio={ratio!r} would keep or "
            "grow the model"
        )


def _check_patterns(arg: str, patterns: object) -> tuple[str, ...]:
    if isinstance(patterns, str):
        patterns = (patterns,)
    if not isinstance(patterns, Iterable):
        raise TypeError(f"{arg} must be a sequence of strings, got {type(patterns).__name__}")
    out = tuple(patterns)
    for p in out:
        if not isinstance(p, str) or not p:
            raise TypeError(f"{arg} must hold non-empty strings, got {p!r}")
    return out


def apply_pela(
    model: nn.Module,
    ratio: float = 2.0,
    skip: Sequence[str] | None = None,
    *,
    min_out_features: int = DEFAULT_MIN_OUT_FEATURES,
    init: Init = "svd",
    svd_dtype: torch.dtype | None = None,
    rank_multiple: int = 1,
    inference_pad: int = DEFAULT_INFERENCE_PAD,
) -> CompressionReport:
    """Compress ``model`` in place and return a :class:`CompressionReport`.

    Every ``nn.Linear`` whose qualified name contains none of the ``skip`` substrings and
    that has at least ``min_out_features`` outputs becomes a :class:`LowRankLinear` of rank
    :func:`rank_for_ratio`. ``skip=None`` uses :data:`DEFAULT_SKIP`; an explicit ``skip``
    must have every pattern match some module name (a typo raises ``ValueError``).
    ``init="none"`` builds the structure without the SVD (to load a compressed state dict).
    ``rank_multiple > 1`` (opt-in, not in the reference) rounds each rank down to a multiple
    of it (see :func:`rank_for_ratio`): the model ends up at least as compressed as asked and
    the thin GEMMs run at SIMD-friendly widths (on an AVX-512 CPU, rank 204 of ViT-B's MLP at
    ratio 3 runs well below the rate of 200 or 192; see the README's benchmark). Rebuilding
    a compressed model to load its state dict needs the same ``rank_multiple``.
    ``inference_pad`` (default 16; 1 = off) is each :class:`LowRankLinear`'s inference-time
    padding of the first factor (same function, same parameters and state dict; see
    :class:`LowRankLinear` and :func:`set_inference_pad`).
    Warns :class:`NoEffectWarning` when no layer was replaced.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_ratio(ratio)
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    if isinstance(min_out_features, bool) or not isinstance(min_out_features, int):
        raise TypeError(f"min_out_features must be an int, got {min_out_features!r}")
    if min_out_features < 1:
        raise ValueError(f"min_out_features must be >= 1, got {min_out_features}")
    _check_multiple(rank_multiple)
    _check_inference_pad(inference_pad)
    names = [n for n, _ in model.named_modules()]
    if skip is None:
        patterns = DEFAULT_SKIP
    else:
        patterns = _check_patterns("skip", skip)
        unused = [p for p in patterns if not any(p in n for n in names)]
        if unused:
            raise ValueError(
                f"skip patterns {unused} match no module name of this "
                f"{type(model).__name__}; remove them (or pass skip=None for the defaults "
                f"{DEFAULT_SKIP}, which tolerate absent names)"
            )

    report = CompressionReport(
        ratio=float(ratio), params_before=count_parameters(model), rank_multiple=rank_multiple
    )
    targets: list[tuple[str, nn.Linear, int]] = []
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:  # exact type: our own LowRankLinear parts are kept
            continue
        if isinstance(model.get_submodule(name.rpartition(".")[0]), LowRankLinear):
            continue
        if any(p in name for p in patterns) or module.out_features < min_out_features:
            report.skipped.append(name)
            continue
        rank = rank_for_ratio(
            module.out_features, module.in_features, ratio, multiple=rank_multiple
        )
        if rank < 1:
            logger.warning(
                "PELA: %s (%dx%d) would get rank 0 at ratio %g; kept",
                name,
                module.out_features,
                module.in_features,
                ratio,
            )
            report.skipped.append(name)
            continue
        targets.append((name, module, rank))

    for name, module, rank in targets:
        weight = module.weight
        new = LowRankLinear(
            module.in_features,
            module.out_features,
            rank,
            bias=module.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
            inference_pad=inference_pad,
        )
        error = rel = float("nan")
        if init == "svd":
            a, b, s = low_rank_factors(weight, rank, svd_dtype=svd_dtype)
            with torch.no_grad():
                new[0].weight.copy_(a)
                new[1].weight.copy_(b)
                if module.bias is not None:
                    new[1].bias.copy_(module.bias)
                error = float((s[rank:] ** 2).sum())
                total = float((s**2).sum())
                rel = error / total if total > 0 else 0.0
        new.train(module.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        report.layers.append(
            CompressedLayer(
                name=name,
                in_features=module.in_features,
                out_features=module.out_features,
                rank=rank,
                params_before=count_parameters(module),
                params_after=count_parameters(new),
                init_error=error,
                relative_error=rel,
            )
        )
    report.params_after = count_parameters(model)
    if not report.layers:
        warnings.warn(
            f"apply_pela: no nn.Linear matched (skip={patterns}, min_out_features="
            f"{min_out_features}); the model is unchanged",
            NoEffectWarning,
            stacklevel=2,
        )
    else:
        logger.info("%s", report)
    return report


def compress_linear_layers(
    model: nn.Module,
    ratio: float = 2.0,
    skip: Sequence[str] | None = None,
    *,
    min_out_features: int = DEFAULT_MIN_OUT_FEATURES,
    init: Init = "svd",
    svd_dtype: torch.dtype | None = None,
    rank_multiple: int = 1,
    inference_pad: int = DEFAULT_INFERENCE_PAD,
) -> nn.Module:
    """:func:`apply_pela`, returning the (same, modified) model; the report is logged.

    ``student = compress_linear_layers(copy.deepcopy(teacher), ratio=2.0)``.
    """
    apply_pela(
        model,
        ratio,
        skip,
        min_out_features=min_out_features,
        init=init,
        svd_dtype=svd_dtype,
        rank_multiple=rank_multiple,
        inference_pad=inference_pad,
    )
    return model


def low_rank_layers(model: nn.Module) -> dict[str, LowRankLinear]:
    """Every :class:`LowRankLinear` of ``model`` by qualified name."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return {n: m for n, m in model.named_modules() if isinstance(m, LowRankLinear)}


def set_inference_pad(model: nn.Module, inference_pad: int) -> int:
    """Set :attr:`LowRankLinear.inference_pad` on every low-rank layer of ``model`` (``1``
    turns the inference-time padding off, e.g. to save the padded copies' memory) and drop
    their caches. Returns the number of layers changed; warns :class:`NoEffectWarning` when
    the model has none."""
    pad = _check_inference_pad(inference_pad)
    layers = low_rank_layers(model)
    for layer in layers.values():
        layer.inference_pad = pad
        layer.clear_inference_cache()
    if not layers:
        warnings.warn(
            "set_inference_pad: the model has no LowRankLinear; unchanged",
            NoEffectWarning,
            stacklevel=2,
        )
    return len(layers)


def merge_low_rank(model: nn.Module) -> list[str]:
    """Replace every :class:`LowRankLinear` of ``model`` (in place) by one ``nn.Linear``
    holding ``BA`` (export to the original architecture). Returns the merged names; warns
    :class:`NoEffectWarning` when there was none."""
    layers = low_rank_layers(model)
    for name, layer in layers.items():
        parent, _, child = name.rpartition(".")
        merged = layer.merge()
        merged.train(layer.training)
        setattr(model.get_submodule(parent) if parent else model, child, merged)
    if not layers:
        warnings.warn(
            "merge_low_rank: the model has no LowRankLinear; unchanged",
            NoEffectWarning,
            stacklevel=2,
        )
    return list(layers)
