"""The uniform min-max quantization grid shared by GPTQ and the round-to-nearest baseline.

Written after ``IST-DASLab/gptq:quant.py`` (``Quantizer.find_params`` with
``perchannel=True, weight=True`` and ``quantize``); the MSE grid search and ternary
("trits") options of the reference are not used by GPTQ and are not provided.
"""

from __future__ import annotations

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
"""Bit widths GPTQ quantizes to (the reference's 2, 3, 4 and 8)."""


def check_bits(bits: object) -> int:
    """Return ``bits`` when it is one of :data:`SUPPORTED_BITS`, else raise ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")
    return bits


def find_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row grid of ``w`` (shape ``[rows, k]``): ``(scale, zero)``, each of shape ``[rows]``.

    The range always contains 0 (``xmin = min(row min, 0)``, ``xmax = max(row max, 0)``);
    symmetric grids use ``max(|xmin|, xmax)`` on both sides and ``zero = (maxq + 1) / 2``;
    an all-zero row gets the range [-1, 1] (``gptq:quant.py:Quantizer.find_params``).
    ``zero`` holds integers stored in ``w``'s floating dtype, as in the reference.
    """
    if w.dim() != 2:
        raise ValueError(f"w must be 2-D [rows, k], got shape {tuple(w.shape)}")
    maxq = 2 ** check_bits(bits) - 1
    zeros = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    # amin / amax: the values of min(1)[0] / max(1)[0] without the index bookkeeping
    xmin = torch.minimum(torch.amin(w, dim=1), zeros)
    xmax = torch.maximum(torch.amax(w, dim=1), zeros)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    empty = (xmin == 0) & (xmax == 0)
    xmin = torch.where(empty, -torch.ones_like(xmin), xmin)
    xmax = torch.where(empty, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def quantize_int(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero, 0, maxq)`` (still in ``x``'s dtype).

    ``torch.round`` rounds half to even, as in the reference.
    """
    return torch.clamp(torch.round(x / scale) + zero, 0, maxq)


def dequantize_int(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``scale * (q - zero)``: the fake-quantized value of codes ``q``."""
    return scale * (q - zero)
