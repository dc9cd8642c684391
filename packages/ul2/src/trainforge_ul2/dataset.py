"""``UL2PackedDataset``: a packed token stream cut into one chunk per example, each at its
denoiser's raw length (the appendix's ``reduce_concat_tokens`` then ``split_tokens`` per
denoiser shard, as one stream with a denoiser drawn per example)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch

from trainforge_ul2.collator import DataCollatorForUL2
from trainforge_ul2.denoisers import _check_int


class UL2PackedDataset(torch.utils.data.IterableDataset):
    """Yields ``{"input_ids": int64 array, "denoiser": index}`` for :class:`DataCollatorForUL2`.

    ``documents`` is an iterable of token-id sequences (or a callable returning a fresh
    one for each epoch). They are concatenated, each followed by EOS unless
    ``append_eos=False`` (use that when the documents already end with EOS); for every
    example a denoiser is drawn with the mixture's rates and exactly its raw length is cut
    from the stream, so the corrupted inputs fill the collator's ``input_length``. The tail
    shorter than the drawn length is dropped. Under a DataLoader with workers, worker k
    reads documents k, k + n, ... and draws with its own generator.
    """

    def __init__(
        self,
        documents: Iterable[Any] | Callable[[], Iterable[Any]],
        collator: DataCollatorForUL2,
        seed: int = 0,
        append_eos: bool = True,
    ) -> None:
        if not isinstance(collator, DataCollatorForUL2):
            raise TypeError(f"collator must be a DataCollatorForUL2, got {collator!r}")
        if not (callable(documents) or isinstance(documents, Iterable)):
            raise TypeError(
                f"documents must be an iterable of token-id sequences or a callable returning "
                f"one, got {documents!r}"
            )
        if not isinstance(append_eos, bool):
            raise TypeError(f"append_eos must be a bool, got {append_eos!r}")
        self.documents = documents
        self.collator = collator
        self.seed = _check_int(seed, "seed", 0)
        self.append_eos = append_eos

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (int(info.id), int(info.num_workers))
        rng = np.random.default_rng([self.seed, worker])
        raw = np.asarray(self.collator.raw_lengths, dtype=np.int64)
        docs = self.documents() if callable(self.documents) else self.documents
        eos = np.asarray([self.collator.eos_id], dtype=np.int64)
        buffer = np.zeros(0, dtype=np.int64)
        nxt = int(self.collator.mixture.sample(1, rng)[0])
        for i, doc in enumerate(docs):
            if i % workers != worker:
                continue
            arr = doc.numpy() if isinstance(doc, torch.Tensor) else np.asarray(doc)
            if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"document {i} must be a 1-D sequence of token ids")
            parts = [buffer, arr.astype(np.int64, copy=False)]
            if self.append_eos:
                parts.append(eos)
            buffer = np.concatenate(parts)
            start = 0
            while buffer.size - start >= raw[nxt]:
                yield {"input_ids": buffer[start : start + raw[nxt]], "denoiser": nxt}
                start += int(raw[nxt])
                nxt = int(self.collator.mixture.sample(1, rng)[0])
            buffer = buffer[start:]
