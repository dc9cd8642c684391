"""Toy training direction: adding the S (prefix-LM) denoiser to span corruption lowers the
held-out next-token loss on a suffix (the trade-off the paper's mixture is for)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainforge_ul2 import DataCollatorForUL2, Denoiser, Mixture, add_ul2_tokens

SPAN = Mixture((Denoiser("R", 0.15, 3.0),), (1.0,))
MIXED = Mixture((Denoiser("R", 0.15, 3.0), Denoiser("S", 0.25)), (0.5, 0.5))
EVAL_S = Mixture((Denoiser("S", 0.25),), (1.0,))


def _run(tok, train, held_out, mixture, seed):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = T5ForConditionalGeneration(cfg)
    col = DataCollatorForUL2(tok, mixture, mode_tokens=None, input_length=48, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for _ in range(60):
        starts = rng.integers(0, train.size - 64, 16)
        loss = model(**col([train[s : s + 64] for s in starts])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    ev = DataCollatorForUL2(tok, EVAL_S, mode_tokens=None, input_length=48)
    batch = ev.collate([held_out[i * 47 : (i + 1) * 47] for i in range(64)], rng=0)
    with torch.no_grad():
        return float(model.eval()(**batch).loss)


@pytest.mark.slow
def test_prefix_lm_in_the_mixture_lowers_suffix_loss():
    from trainforge_core.data import kjv_hf_tokenizer, kjv_lm_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = kjv_hf_tokenizer(2048)
        add_ul2_tokens(tok, num_sentinels=100, mode_tokens=None)
        data = kjv_lm_data(2048)
        train, held_out = data.train.numpy(), data.eval.numpy()
        gaps = [
            _run(tok, train, held_out, SPAN, s) - _run(tok, train, held_out, MIXED, s)
            for s in (0, 1)
        ]
    finally:
        torch.set_num_threads(threads)
    assert np.mean(gaps) > 0.05, gaps
