"""Every public function and class rejects bad input with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainforge_ul2 import (
    DataCollatorForUL2,
    Denoiser,
    Mixture,
    UL2PackedDataset,
    add_ul2_tokens,
    denoise,
    expand_prefix_lm_mask,
    find_sentinel_ids,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    prefix_lm_attention_mask,
    prefix_lm_lengths,
    random_prefix_noise_mask,
    random_spans_noise_mask,
    sentinel_token,
    span_corruption_lengths,
)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_rates_outside_0_1(rate):
    with pytest.raises((ValueError, TypeError), match="noise_density"):
        Denoiser("R", rate, 3.0)
    with pytest.raises((ValueError, TypeError), match="noise_density"):
        random_spans_noise_mask(100, rate, 3.0)
    with pytest.raises((ValueError, TypeError), match="noise_density"):
        span_corruption_lengths(512, rate, 3.0)


@pytest.mark.parametrize("mu", [0.5, 0.0, -3.0, float("inf")])
def test_mean_span_below_1(mu):
    with pytest.raises((ValueError, TypeError), match="mean_noise_span_length"):
        Denoiser("X", 0.5, mu)
    with pytest.raises((ValueError, TypeError), match="mean_noise_span_length"):
        random_spans_noise_mask(100, 0.5, mu)
    with pytest.raises((ValueError, TypeError), match="mean_noise_span_length"):
        span_corruption_lengths(512, 0.5, mu)


def test_denoiser_fields():
    with pytest.raises(ValueError, match="paradigm"):
        Denoiser("Q", 0.15, 3.0)
    with pytest.raises(ValueError, match="needs mean_noise_span_length"):
        Denoiser("R", 0.15)
    with pytest.raises(ValueError, match="must be None"):
        Denoiser("S", 0.25, 3.0)
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        Denoiser("S", 0.75)
    with pytest.raises(TypeError, match="name"):
        Denoiser("R", 0.15, 3.0, name=3)


def test_mixture_rates():
    d = Denoiser("R", 0.15, 3.0)
    with pytest.raises(ValueError, match="sum to 1"):
        Mixture((d, d), (0.5, 0.6))
    with pytest.raises(ValueError, match="one rate per denoiser"):
        Mixture((d, d), (1.0,))
    with pytest.raises(ValueError, match="> 0"):
        Mixture((d, d), (1.2, -0.2))
    with pytest.raises(TypeError, match="Denoiser"):
        Mixture(("R",), (1.0,))
    with pytest.raises(TypeError, match="finite"):
        Mixture((d,), ("1",))
    with pytest.raises(ValueError, match="n must be"):
        Mixture((d,), (1.0,)).sample(-1)


def test_too_short_input_lengths(make_tok):
    with pytest.raises(ValueError, match="too short"):
        span_corruption_lengths(100, 0.15, 64.0)
    with pytest.raises(ValueError, match="input_length"):
        span_corruption_lengths(1, 0.15, 3.0)
    with pytest.raises(ValueError, match="input_length"):
        prefix_lm_lengths(2)
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        prefix_lm_lengths(100, 0.6)
    with pytest.raises(ValueError, match="input_length=128 for denoiser X\\(mu=64, r=0.15\\)"):
        DataCollatorForUL2(make_tok(), input_length=128)


def test_masks_bad_arguments():
    with pytest.raises(ValueError, match="length"):
        random_spans_noise_mask(0, 0.15, 3.0)
    with pytest.raises(TypeError, match="length"):
        random_spans_noise_mask(10.0, 0.15, 3.0)
    with pytest.raises(TypeError, match="rng"):
        random_spans_noise_mask(10, 0.15, 3.0, rng="seed")
    with pytest.raises(ValueError, match="batch_size"):
        random_spans_noise_mask(10, 0.15, 3.0, batch_size=0)
    with pytest.raises(ValueError, match="non-noise tokens to separate"):
        random_spans_noise_mask(100, 0.9, 1.0)
    with pytest.raises(ValueError, match="length"):
        random_prefix_noise_mask(1)
    with pytest.raises(ValueError, match=r"\(0, 0.5\]"):
        random_prefix_noise_mask(10, 0.7)


def test_sentinel_functions_bad_arguments():
    tokens = np.arange(10)
    mask = np.zeros(10, dtype=bool)
    mask[3:5] = True
    mask[7] = True
    with pytest.raises(ValueError, match="noise_mask"):
        noise_span_to_unique_sentinel(tokens, mask[:5], [100, 101])
    with pytest.raises(ValueError, match="noise_mask"):
        noise_span_to_unique_sentinel(tokens, mask.astype(int), [100, 101])
    with pytest.raises(TypeError, match="tokens"):
        noise_span_to_unique_sentinel(tokens.astype(float), mask, [100, 101])
    with pytest.raises(ValueError, match="2 noise spans but only 1 sentinel"):
        noise_span_to_unique_sentinel(tokens, mask, [100])
    with pytest.raises(ValueError, match="sentinel"):
        nonnoise_span_to_unique_sentinel(tokens, mask, [100, 101])
    rows = np.stack([mask, np.roll(mask, 1) | np.roll(mask, 2)])
    with pytest.raises(ValueError, match="same number of tokens"):
        noise_span_to_unique_sentinel(np.stack([tokens, tokens]), rows, [100, 101, 102])
    assert noise_span_to_unique_sentinel(tokens, mask, [100, 101]).tolist() == [
        0,
        1,
        2,
        100,
        5,
        6,
        101,
        8,
        9,
    ]


def test_tokenizer_checks(make_tok):
    with pytest.raises(TypeError, match="tokenizer"):
        DataCollatorForUL2("t5-small")
    with pytest.raises(TypeError, match="tokenizer"):
        find_sentinel_ids(object())
    with pytest.raises(TypeError, match="tokenizer"):
        add_ul2_tokens(None)
    with pytest.raises(ValueError, match="num_sentinels"):
        add_ul2_tokens(make_tok(), num_sentinels=-1)
    with pytest.raises(ValueError, match="mode_tokens"):
        add_ul2_tokens(make_tok(), mode_tokens="gpt")
    tok = make_tok()
    tok.pad_token = None
    with pytest.raises(ValueError, match="pad_token_id"):
        DataCollatorForUL2(tok, input_length=256)
    assert sentinel_token(3) == "<extra_id_3>"


def test_collator_arguments(make_tok):
    tok = make_tok()
    with pytest.raises(TypeError, match="mixture"):
        DataCollatorForUL2(tok, mixture=[Denoiser("R", 0.15, 3.0)])
    with pytest.raises(ValueError, match="arch"):
        DataCollatorForUL2(tok, arch="encoder_only")
    with pytest.raises(ValueError, match="mode_tokens"):
        DataCollatorForUL2(tok, mode_tokens="t5")
    with pytest.raises(ValueError, match="mode_tokens"):
        DataCollatorForUL2(tok, mode_tokens={"Z": "[Z]"})
    with pytest.raises(TypeError, match="mode_tokens"):
        DataCollatorForUL2(tok, mode_tokens=3)
    with pytest.raises(ValueError, match="input_length"):
        DataCollatorForUL2(tok, input_length=2)
    with pytest.raises(TypeError, match="prefix_lm_mask"):
        DataCollatorForUL2(tok, prefix_lm_mask="yes")
    with pytest.raises(TypeError, match="mask_dtype"):
        DataCollatorForUL2(tok, mask_dtype=torch.int64)
    with pytest.raises(ValueError, match="seed"):
        DataCollatorForUL2(tok, seed=-1)
    with pytest.raises(ValueError, match="sentinel_ids has 3"):
        DataCollatorForUL2(tok, input_length=256, sentinel_ids=[1, 2, 3])
    with pytest.raises(TypeError, match="sentinel_ids"):
        DataCollatorForUL2(tok, input_length=256, sentinel_ids=["a"])


def test_collator_call_bad_examples(make_tok):
    col = DataCollatorForUL2(make_tok(), input_length=256)
    with pytest.raises(TypeError, match="non-empty list"):
        col([])
    with pytest.raises(ValueError, match="no 'input_ids'"):
        col([{"ids": [1, 2, 3]}])
    with pytest.raises(ValueError, match="denoiser must be an index"):
        col([{"input_ids": list(range(10, 300)), "denoiser": 9}])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        col([[5]])
    with pytest.raises(TypeError, match="1-D"):
        col([np.ones((3, 3), dtype=np.int64)])
    with pytest.raises(TypeError, match="rng"):
        col.collate([list(range(10, 300))], rng=1.5)


def test_prefix_mask_and_denoise_bad_arguments():
    with pytest.raises(TypeError, match="prefix_lengths"):
        prefix_lm_attention_mask([1, 2], 5)
    with pytest.raises(ValueError, match="prefix_lengths"):
        prefix_lm_attention_mask(torch.tensor([6]), 5)
    with pytest.raises(TypeError, match="dtype"):
        prefix_lm_attention_mask(torch.tensor([2]), 5, torch.int32)
    with pytest.raises(TypeError, match="Denoiser"):
        denoise([1, 2, 3], "R", [100], 1)
    with pytest.raises(ValueError, match="tokens"):
        denoise([1], Denoiser("R", 0.5, 1.0), [100], 1)
    with pytest.raises(ValueError, match="eos_token_id"):
        denoise([1, 2, 3], Denoiser("R", 0.5, 1.0), [100], -1)


def test_packed_dataset_bad_arguments(make_tok):
    col = DataCollatorForUL2(make_tok(), input_length=256)
    with pytest.raises(TypeError, match="collator"):
        UL2PackedDataset([[1, 2]], object())
    with pytest.raises(TypeError, match="documents"):
        UL2PackedDataset(3, col)
    with pytest.raises(ValueError, match="seed"):
        UL2PackedDataset([[1, 2]], col, seed=-2)
    with pytest.raises(TypeError, match="append_eos"):
        UL2PackedDataset([[1, 2]], col, append_eos=1)
    with pytest.raises(TypeError, match="document 0"):
        list(UL2PackedDataset([np.ones((2, 2), dtype=np.int64)], col))


def test_compact_mask_bad_input(tok):
    with pytest.raises(ValueError, match="compact_mask=True needs arch='decoder_only'"):
        DataCollatorForUL2(tok, compact_mask=True)
    with pytest.raises(ValueError, match="compact_mask=True needs"):
        DataCollatorForUL2(tok, arch="decoder_only", prefix_lm_mask=False, compact_mask=True)
    with pytest.raises(TypeError, match="compact_mask must be a bool"):
        DataCollatorForUL2(tok, arch="decoder_only", compact_mask=1)
    with pytest.raises(TypeError, match="mapping"):
        expand_prefix_lm_mask([1, 2])
    with pytest.raises(ValueError, match="prefix_lengths"):
        expand_prefix_lm_mask({"input_ids": torch.zeros(1, 4, dtype=torch.long)})
