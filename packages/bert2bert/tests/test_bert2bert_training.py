"""Slow: a small BERT trained with MLM on a synthetic corpus keeps its loss after growth."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from trainforge_bert2bert import bert2bert

VOCAB, MASK = 40, 39


def _cfg(layers, hidden, heads, ffn):
    return T.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def _batch(gen, n=32, length=16):
    """Synthetic corpus: arithmetic sequences mod 39 with a random start and step in
    {1, 2, 3}; a masked token is predictable from its neighbours."""
    start = torch.randint(0, MASK, (n, 1), generator=gen)
    step = torch.randint(1, 4, (n, 1), generator=gen)
    seq = (start + step * torch.arange(length)) % MASK
    pick = torch.rand(seq.shape, generator=gen) < 0.15
    pick[:, 0] |= ~pick.any(1)
    return seq.masked_fill(pick, MASK), torch.where(pick, seq, -100)


def _loss(model, batches):
    model.eval()
    with torch.no_grad():
        return sum(float(model(input_ids=x, labels=y).loss) for x, y in batches) / len(batches)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_grown_model_starts_where_the_small_one_ended(seed):
    torch.manual_seed(seed)
    small = T.BertForMaskedLM(_cfg(2, 32, 2, 64))
    opt = torch.optim.AdamW(small.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    small.train()
    for _ in range(200):
        x, y = _batch(gen)
        small(input_ids=x, labels=y).loss.backward()
        opt.step()
        opt.zero_grad()
    held = [_batch(torch.Generator().manual_seed(100 + i)) for i in range(4)]
    big_cfg = _cfg(4, 64, 4, 128)
    small_loss = _loss(small, held)
    fpi = _loss(bert2bert(small, big_cfg, "fpi", seed=seed), held)
    aki = _loss(bert2bert(small, big_cfg, "aki", seed=seed), held)
    torch.manual_seed(seed + 10)
    scratch = _loss(T.BertForMaskedLM(big_cfg), held)
    assert small_loss < 0.5 * scratch  # the small model learned something
    assert abs(fpi - small_loss) < 0.05 * small_loss, (fpi, small_loss)
    assert fpi < 0.5 * scratch and aki < 0.5 * scratch, (fpi, aki, scratch)
