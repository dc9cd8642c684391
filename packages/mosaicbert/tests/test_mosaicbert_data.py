"""Verse data and BERT masking."""

from __future__ import annotations

import pytest
import torch

from trainforge_mosaicbert import kjv_verse_mlm_data, mlm_mask, pad_vocab


def test_mlm_mask_rates_and_specials():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 100, (64, 128), generator=g)
    ids[:, 0] = 1
    mask = torch.ones_like(ids)
    mask[:, 100:] = 0
    inputs, labels = mlm_mask(
        ids, mask, mask_id=3, vocab_size=100, mlm_probability=0.3, special_ids=(1,), generator=g
    )
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 100:].any()
    assert (labels[chosen] == ids[chosen]).all()
    rate = chosen[:, 1:100].float().mean().item()
    assert abs(rate - 0.3) < 0.02
    to_mask = (inputs[chosen] == 3).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(to_mask - 0.8) < 0.03 and 0.08 < kept < 0.14  # 10% kept + random hits
    assert (inputs[~chosen] == ids[~chosen]).all()


def test_mlm_mask_bad_input():
    ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="mlm_probability"):
        mlm_mask(ids, torch.ones_like(ids), mask_id=1, vocab_size=8, mlm_probability=0.0)
    with pytest.raises(ValueError, match="attention_mask"):
        mlm_mask(ids, torch.ones(2, 5), mask_id=1, vocab_size=8)
    with pytest.raises(ValueError, match="mask_id"):
        mlm_mask(ids, torch.ones_like(ids), mask_id=8, vocab_size=8)
    with pytest.raises(ValueError, match="input_ids"):
        mlm_mask(torch.ones(4), torch.ones(4), mask_id=1, vocab_size=8)


def test_pad_vocab():
    assert pad_vocab(30522) == 30528
    assert pad_vocab(2049) == 2112
    assert pad_vocab(64) == 64
    with pytest.raises(ValueError, match="size"):
        pad_vocab(0)
    with pytest.raises(ValueError, match="multiple"):
        pad_vocab(10, 0)


def test_kjv_verses_have_varied_lengths_and_a_held_out_split():
    data = kjv_verse_mlm_data(2048, max_len=64)
    assert len(data.train) > 10 * len(data.eval) > 0
    lengths = torch.tensor([s.numel() for s in data.train])
    assert lengths.max() == 64 and lengths.min() < 10
    assert all(int(s[0]) == data.cls_id and int(s[-1]) == data.sep_id for s in data.train[:50])
    assert data.vocab_size % 64 == 0 and data.mask_id < data.vocab_size
    ids, mask = data.collate(list(data.train[:4]), pad_to=64)
    assert ids.shape == (4, 64) and (ids[mask == 0] == data.pad_id).all()
    with pytest.raises(ValueError, match="pad_to"):
        data.collate(list(data.train[:4]), pad_to=2)
    with pytest.raises(ValueError, match="samples"):
        data.collate([])
    with pytest.raises(ValueError, match="max_len"):
        kjv_verse_mlm_data(2048, max_len=2)
