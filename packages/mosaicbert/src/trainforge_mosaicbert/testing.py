"""Small builders for tests and examples: a tiny config and a ragged, padded batch."""

from __future__ import annotations

from typing import Any

import torch

from trainforge_mosaicbert.configuration import MosaicBertConfig


def tiny_config(**overrides: Any) -> MosaicBertConfig:
    """A 2-layer, 32-wide, 4-head MosaicBERT config (vocab 64, no dropout, SDPA)."""
    kwargs: dict[str, Any] = dict(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_dropout_prob=0.0,
        attn_impl="sdpa",
    )
    kwargs.update(overrides)
    return MosaicBertConfig(**kwargs)


def ragged_batch(
    lengths: list[int], pad_to: int, vocab: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of random ids in ``[3, vocab)`` with the given real
    lengths, right-padded with 0 to ``pad_to``."""
    if any(n > pad_to or n < 0 for n in lengths):
        raise ValueError(f"lengths must be in [0, pad_to={pad_to}], got {lengths}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), pad_to, dtype=torch.long)
    mask = torch.zeros(len(lengths), pad_to, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask
