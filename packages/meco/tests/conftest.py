from __future__ import annotations

import pytest


class CharTokenizer:
    """A toy tokenizer: one id per byte (0-255), BOS 256, EOS 257, PAD 258."""

    bos_token_id = 256
    eos_token_id = 257
    pad_token_id = 258

    def __call__(self, text: str) -> list[int]:
        return list(text.encode())


@pytest.fixture
def char_tok() -> CharTokenizer:
    return CharTokenizer()
