"""DataCollatorForUL2: mode tokens, mixture draws, encoder-decoder and decoder-only batches,
sentinel overflow, tokenizer round trips and the packed dataset."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from trainforge_ul2 import (
    T5_SPAN_CORRUPTION,
    UL2_PAPER_MIXTURE,
    DataCollatorForUL2,
    Denoiser,
    Mixture,
    UL2PackedDataset,
    add_ul2_tokens,
    denoise,
    expand_prefix_lm_mask,
    find_sentinel_ids,
    prefix_lm_attention_mask,
)


def test_mode_token_first_and_mixture_frequencies(tok, stream):
    col = DataCollatorForUL2(tok, input_length=256, seed=0)
    n = 4000
    examples = [stream[i * 40 : i * 40 + 300] for i in range(n)]
    out = col(examples)
    first = out["input_ids"][:, 0].numpy()
    ids = {p: tok.convert_tokens_to_ids(f"[{p}]") for p in "RXS"}
    expected = {"R": 0.4, "X": 0.4, "S": 0.2}
    for p, rate in expected.items():
        assert abs(np.mean(first == ids[p]) - rate) < 0.03
    assert np.isin(first, list(ids.values())).all()


def test_mode_token_matches_the_given_denoiser(tok, stream):
    with pytest.raises(ValueError, match="unknown"):
        DataCollatorForUL2(tok, mode_tokens="ul2_20b", input_length=256)
    assert add_ul2_tokens(tok, mode_tokens="ul2_20b") == 3
    col = DataCollatorForUL2(tok, mode_tokens="ul2_20b", input_length=256, add_sentinels=True)
    want = {"R": "[NLU]", "X": "[NLG]", "S": "[S2S]"}
    examples = [{"input_ids": stream[:1000], "denoiser": d} for d in range(7)]
    out = col(examples)
    for d, row in enumerate(out["input_ids"]):
        text = tok.decode(row[: len(col.plans[d].mode_ids)])
        assert text.replace(" ", "") == want[UL2_PAPER_MIXTURE.denoisers[d].paradigm]


def test_seeded_collator_is_deterministic(tok, stream):
    ex = [stream[i * 300 : (i + 1) * 300] for i in range(8)]
    a = DataCollatorForUL2(tok, input_length=256, seed=3)(ex)
    b = DataCollatorForUL2(tok, input_length=256, seed=3)(ex)
    c = DataCollatorForUL2(tok, input_length=256, seed=4)(ex)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_ids"], c["input_ids"])


def test_encoder_decoder_batch_trains_a_tiny_t5(tok, stream):
    from transformers import T5Config, T5ForConditionalGeneration

    col = DataCollatorForUL2(tok, input_length=200)
    batch = col([stream[i * 400 : (i + 1) * 400] for i in range(4)])
    assert batch["input_ids"].shape == (4, 200) and batch["labels"].shape == (4, col.targets_length)
    # attention covers exactly the tokens up to the inputs' EOS
    for ids, am in zip(batch["input_ids"], batch["attention_mask"], strict=True):
        n = int(am.sum())
        assert ids[n - 1] == tok.eos_token_id and (ids[n:] == tok.pad_token_id).all()
    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = T5ForConditionalGeneration(cfg)
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()


def test_decoder_only_prefix_mask_and_labels(tok, stream):
    mix = Mixture((Denoiser("R", 0.15, 3.0), Denoiser("S", 0.25)), (0.5, 0.5))
    col = DataCollatorForUL2(tok, mix, input_length=32, arch="decoder_only")
    batch = col([stream[i * 400 : (i + 1) * 400] for i in range(6)])
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    t = col.sequence_length
    assert ids.shape == (6, t) and mask.shape == (6, 1, t, t)
    for b in range(6):
        is_t = labels[b] != -100
        prefix = int(is_t.nonzero()[0])  # inputs (mode, body, EOS) come first
        assert ids[b, prefix - 1] == tok.eos_token_id
        assert torch.equal(labels[b][is_t], ids[b][is_t])
        assert not is_t[:prefix].any()
        allowed = mask[b, 0] == 0
        expect = torch.zeros(t, t, dtype=torch.bool)
        for i in range(t):  # plain loop: bidirectional over the prefix, causal after
            for j in range(t):
                expect[i, j] = j <= i or j < prefix
        assert torch.equal(allowed, expect)


def test_decoder_only_forward_is_bidirectional_over_the_prefix(tok, stream):
    from trainforge_core.models import tiny_llama

    col = DataCollatorForUL2(
        tok, T5_SPAN_CORRUPTION, mode_tokens=None, input_length=64, arch="decoder_only"
    )
    batch = col([stream[:200]])
    model = tiny_llama(
        vocab_size=len(tok), hidden_size=32, num_layers=1, num_heads=4, max_position_embeddings=256
    ).eval()
    n_in = int((batch["labels"][0] != -100).nonzero()[0])
    with torch.no_grad():
        base = model(**batch).logits
        assert torch.isfinite(base[0, : n_in + 10]).all()
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][0, n_in - 2] = 7  # a later prefix token
        after = model(**changed).logits
        assert not torch.allclose(after[0, 0], base[0, 0])  # position 0 sees it
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][0, n_in + 3] = 7  # a target token
        after = model(**changed).logits
        assert torch.allclose(after[0, : n_in + 3], base[0, : n_in + 3])  # earlier: unchanged
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_decoder_only_causal_variant_and_bool_mask(tok, stream):
    ex = [stream[:300], stream[300:600]]
    causal = DataCollatorForUL2(
        tok, input_length=200, arch="decoder_only", prefix_lm_mask=False, seed=1
    )(ex)
    pref = DataCollatorForUL2(
        tok, input_length=200, arch="decoder_only", mask_dtype=torch.bool, seed=1
    )(ex)
    assert causal["attention_mask"].shape == causal["input_ids"].shape
    assert torch.equal(causal["input_ids"], pref["input_ids"])
    real = causal["attention_mask"].bool()
    assert torch.equal(real, (causal["input_ids"] != tok.pad_token_id) | (causal["labels"] != -100))
    assert pref["attention_mask"].dtype == torch.bool


def test_prefix_mask_function_matches_float64_reference():
    p = torch.tensor([0, 3, 5])
    m = prefix_lm_attention_mask(p, 5, torch.float64)
    ref = torch.full((3, 1, 5, 5), torch.finfo(torch.float64).min, dtype=torch.float64)
    for b, pl in enumerate(p.tolist()):
        for i in range(5):
            for j in range(5):
                if j <= i or j < pl:
                    ref[b, 0, i, j] = 0.0
    assert torch.equal(m, ref)


def test_sentinel_overflow_raises_and_add_sentinels_extends(stream, caplog, make_tok):
    tok = make_tok(num_sentinels=100)
    with pytest.raises(ValueError, match="only 100 sentinel tokens.*127 spans"):
        DataCollatorForUL2(tok, input_length=512)
    before = len(tok)
    with caplog.at_level(logging.WARNING):
        col = DataCollatorForUL2(tok, input_length=512, add_sentinels=True)
    assert len(tok) == before + 27 and len(col.sentinel_ids) == 127
    assert "resize" in caplog.text
    assert len(set(col.sentinel_ids.tolist())) == 127
    assert set(col.sentinel_ids.tolist()).isdisjoint(range(before - 103))  # no vocabulary id


def test_tokenizer_without_sentinels_raises(make_tok):
    tok = make_tok(num_sentinels=0)
    with pytest.raises(ValueError, match="no sentinel tokens"):
        DataCollatorForUL2(tok, input_length=256)
    # the prefix-LM denoiser alone needs none
    DataCollatorForUL2(tok, Mixture((Denoiser("S", 0.25),), (1.0,)), input_length=64)


def test_added_tokens_survive_save_pretrained(tmp_path, stream, make_tok):
    from transformers import AutoTokenizer

    tok = make_tok(num_sentinels=0, mode_tokens=False)
    added = add_ul2_tokens(tok, num_sentinels=130)
    assert added == 133 and add_ul2_tokens(tok, num_sentinels=130) == 0
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert find_sentinel_ids(loaded) == find_sentinel_ids(tok)
    ex = [stream[i * 1000 : (i + 1) * 1000] for i in range(8)]
    a = DataCollatorForUL2(tok, input_length=512, seed=5)(ex)
    b = DataCollatorForUL2(loaded, input_length=512, seed=5)(ex)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_denoise_single_chunk(tok):
    sent = find_sentinel_ids(tok)
    chunk = np.arange(10, 40)
    inp, tgt = denoise(chunk, Denoiser("X", 0.5, 3.0), sent, eos_token_id=1, rng=0, mode_ids=[5])
    assert inp[0] == 5 and inp[-1] == 1 and tgt[-1] == 1 and tgt[0] == sent[0]
    inp, tgt = denoise(chunk, Denoiser("S", 0.25), sent, eos_token_id=1, rng=0)
    assert inp[:-1].tolist() + tgt[:-1].tolist() == chunk.tolist()


def test_packed_dataset_cuts_each_denoisers_raw_length(tok, stream):
    col = DataCollatorForUL2(tok, input_length=256)
    docs = [stream[i : i + 997] for i in range(0, 60_000, 997)]
    ds = UL2PackedDataset(docs, col, seed=0)
    items = list(ds)
    eos = tok.eos_token_id
    joined = np.concatenate([np.append(d, eos) for d in docs])
    cut = np.concatenate([it["input_ids"] for it in items])
    assert np.array_equal(cut, joined[: cut.size])  # nothing lost or reordered
    assert joined.size - cut.size < max(col.raw_lengths)
    for it in items:
        assert it["input_ids"].size == col.raw_lengths[it["denoiser"]]
    batch = col(items[:8])
    assert (
        batch["attention_mask"].sum(1)[[i for i in range(8) if items[i]["denoiser"] < 6]] == 256
    ).all()


def test_packed_dataset_under_dataloader_workers(tok, stream):
    col = DataCollatorForUL2(tok, input_length=256)
    docs = [stream[i : i + 500] for i in range(0, 20_000, 500)]
    loader = torch.utils.data.DataLoader(
        UL2PackedDataset(docs, col), batch_size=4, collate_fn=col, num_workers=2
    )
    batches = list(loader)
    assert batches and all(b["input_ids"].shape[1] == 256 for b in batches)
    firsts = {tuple(b["input_ids"][0, :20].tolist()) for b in batches}
    assert len(firsts) == len(batches)  # workers do not repeat each other


def test_compact_mask_expands_to_the_4d_batch(tok, stream):
    ex = [stream[:300], stream[300:600], stream[600:700]]
    full = DataCollatorForUL2(tok, input_length=200, arch="decoder_only", seed=3)(ex)
    col = DataCollatorForUL2(tok, input_length=200, arch="decoder_only", compact_mask=True, seed=3)
    compact = col(ex)
    assert compact["attention_mask"].shape == compact["input_ids"].shape
    assert compact["prefix_lengths"].shape == (3,)
    # the prefix covers the inputs (mode token .. EOS): exactly the keys every query sees
    seen = full["attention_mask"][:, 0, 0] == 0
    assert torch.equal(seen.sum(1), compact["prefix_lengths"])
    out = expand_prefix_lm_mask(compact, dtype=torch.float32)
    assert set(out) == set(full)
    for key in full:
        assert torch.equal(out[key], full[key]), key
    bool_out = expand_prefix_lm_mask(compact, dtype=torch.bool, device="cpu")
    assert torch.equal(bool_out["attention_mask"], full["attention_mask"] == 0)
    assert "prefix_lengths" in compact  # the input batch is left as it was


def test_ranks_draw_different_streams_from_one_seed(tok, stream, monkeypatch):
    examples = [stream[i * 300 : i * 300 + 300] for i in range(16)]

    def first_batch(rank: int | None) -> torch.Tensor:
        if rank is not None:  # a stand-in for an initialised process group
            monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
            monkeypatch.setattr(torch.distributed, "get_rank", lambda: rank)
        return DataCollatorForUL2(tok, input_length=256, seed=3)(examples)["input_ids"]

    single = first_batch(None)
    rank0, rank1, rank1_again = first_batch(0), first_batch(1), first_batch(1)
    assert torch.equal(rank1, rank1_again)  # deterministic per (seed, rank)
    assert not torch.equal(rank0, rank1)
    assert not torch.equal(single, rank1)
