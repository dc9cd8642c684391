"""A small word-level tokenizer with T5-style sentinels, built in memory (no download)."""

from __future__ import annotations

import numpy as np
import pytest

N_WORDS = 500


def make_tokenizer(num_sentinels: int = 100, mode_tokens: bool = True):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(N_WORDS)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    extra = [f"<extra_id_{i}>" for i in range(num_sentinels)]
    if mode_tokens:
        extra += ["[R]", "[X]", "[S]"]
    if extra:
        hf.add_tokens(extra, special_tokens=True)
    return hf


@pytest.fixture
def make_tok():
    """The factory itself (tests run with --import-mode=importlib cannot import conftest)."""
    return make_tokenizer


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def stream():
    """A token stream of ordinary word ids (3 .. 3 + N_WORDS)."""
    return np.random.default_rng(123).integers(3, 3 + N_WORDS, size=200_000)
