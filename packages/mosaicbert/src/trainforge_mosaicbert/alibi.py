"""ALiBi (Press et al., 2022) for a bidirectional encoder: a bias -m_h * |i - j| per head.

Slopes follow ``mosaicml/examples:examples/benchmarks/bert/src/bert_layers.py``
(``BertEncoder.rebuild_alibi_tensor``): for a power-of-two head count H the slopes are
``2^(-8 (h + 1) / H)``; otherwise the slopes of the nearest lower power of two, followed by
every other slope of the next power of two.
"""

from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> list[float]:
    """The ALiBi slope of every head, as in the reference (``_get_alibi_head_slopes``).

    >>> alibi_slopes(4)
    [0.25, 0.0625, 0.015625, 0.00390625]
    """
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    extra = alibi_slopes(2 * closest)[0::2][: num_heads - closest]
    return power_of_two(closest) + extra


def alibi_bias(
    slopes: torch.Tensor | list[float],
    seq_len: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The symmetric ALiBi bias ``-m_h * |i - j|`` as a ``[1, heads, seq_len, seq_len]`` tensor."""
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    m = torch.as_tensor(slopes, dtype=torch.float32, device=device)
    if m.ndim != 1 or m.numel() == 0:
        raise ValueError(f"slopes must be a non-empty 1-D sequence, got shape {tuple(m.shape)}")
    pos = torch.arange(seq_len, device=m.device)
    distance = (pos[None, :] - pos[:, None]).abs().to(torch.float32)
    return (-m[:, None, None] * distance).unsqueeze(0).to(dtype)
