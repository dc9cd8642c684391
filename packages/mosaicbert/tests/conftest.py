from __future__ import annotations

import pytest
import torch

from trainforge_mosaicbert import MosaicBertConfig


def tiny_config(**overrides) -> MosaicBertConfig:
    kwargs = dict(
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


def ragged_batch(lengths: list[int], pad_to: int, vocab: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), pad_to, dtype=torch.long)
    mask = torch.zeros(len(lengths), pad_to, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, :n] = 1
    return ids, mask


@pytest.fixture
def cfg() -> MosaicBertConfig:
    return tiny_config()
