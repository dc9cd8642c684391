"""Collator throughput: examples of 512 input tokens per second on one core.

Recipe: ``OMP_NUM_THREADS=1 uv run python packages/ul2/benchmarks/bench_collator.py`` from the
workspace root. The tokenizer is the core's KJV BPE (2048) plus 128 sentinels and the
paper's mode tokens; the examples are real KJV token chunks cut at each denoiser's raw
length (``UL2PackedDataset``). Each row times one call on a batch of 64 and reports
examples per second of *process CPU time* (``time.process_time``, median of 15 calls after
2 warm-ups, the cases interleaved round by round): the shared 2-core machine this ran on
was oversubscribed (load 12-18), which made wall-clock times swing by 5x between rows.

Baseline: the span-corruption collator of transformers' T5 pre-training example
(``DataCollatorForT5MLM`` in ``examples/flax/language-modeling/run_t5_mlm_flax.py``),
re-implemented below from its description: one mask per row (numpy shuffle of the split
indicators, segment sums, interleaving), sentinel ids by cumulative sums over the batch,
boolean filtering, EOS, decoder inputs shifted right. It is run at each span denoiser's
(mean span, rate) on the same chunks; it has no prefix LM, so its mixture cost counts our
S time for the S share (in its favour). The mixture rows compare with that rate-weighted
baseline time per example.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from trainforge_core.data import kjv_hf_tokenizer, kjv_lm_data
from trainforge_ul2 import (
    UL2_PAPER_MIXTURE,
    DataCollatorForUL2,
    Mixture,
    add_ul2_tokens,
)

BATCH = 64
WARMUP, REPEATS = 2, 15
INPUT_LENGTH = 512


class T5MLMBaseline:
    """transformers' example T5 span-corruption collator, restated (see the header)."""

    def __init__(self, eos_id: int, sentinel_top: int, noise_density=0.15, mean_span=3.0):
        self.eos_id = eos_id
        self.sentinel_top = sentinel_top  # first sentinel id; later spans count down
        self.noise_density = noise_density
        self.mean_span = mean_span

    def _segments(self, items: int, segments: int) -> np.ndarray:
        starts = np.arange(items - 1) < (segments - 1)
        np.random.shuffle(starts)
        segment_id = np.cumsum(np.pad(starts, [[1, 0]]))
        return np.bincount(segment_id)

    def mask(self, length: int) -> np.ndarray:
        n_noise = min(max(int(np.round(length * self.noise_density)), 1), length - 1)
        n_spans = max(int(np.round(n_noise / self.mean_span)), 1)
        noise = self._segments(n_noise, n_spans)
        nonnoise = self._segments(length - n_noise, n_spans)
        spans = np.stack([nonnoise, noise], axis=1).reshape(-1)
        indicator = np.zeros(length, dtype=np.int8)
        indicator[np.cumsum(spans)[:-1]] = 1
        return np.cumsum(indicator) % 2 == 1

    def sentinel_ids(self, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.int64)
        starts = m - np.roll(m, 1, axis=-1) * m
        starts[:, 0] = m[:, 0]
        ids = np.where(starts != 0, np.cumsum(starts, axis=-1), 0)
        ids = np.where(ids != 0, self.sentinel_top + 1 - ids, 0)
        return ids - (m - starts)  # -1 marks tokens to drop

    def filter(self, ids: np.ndarray, sentinel: np.ndarray) -> np.ndarray:
        full = np.where(sentinel != 0, sentinel, ids)
        kept = full[full >= 0].reshape(ids.shape[0], -1)
        return np.concatenate([kept, np.full((ids.shape[0], 1), self.eos_id)], axis=-1)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = np.array([e["input_ids"] for e in examples])
        mask = np.asarray([self.mask(ids.shape[1]) for _ in range(ids.shape[0])])
        inputs = self.filter(ids, self.sentinel_ids(mask))
        labels = self.filter(ids, self.sentinel_ids(~mask))
        decoder = np.zeros_like(labels)
        decoder[:, 1:] = labels[:, :-1]
        return {
            "input_ids": torch.from_numpy(inputs),
            "labels": torch.from_numpy(labels),
            "decoder_input_ids": torch.from_numpy(decoder),
        }


def examples_for(col: DataCollatorForUL2, stream: np.ndarray, n: int) -> list[dict]:
    out, start, rng = [], 0, np.random.default_rng(0)
    draws = col.mixture.sample(n, rng)
    for d in draws:
        raw = col.raw_lengths[int(d)]
        out.append({"input_ids": stream[start : start + raw], "denoiser": int(d)})
        start += raw
    return out


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    tok = kjv_hf_tokenizer(2048)
    add_ul2_tokens(tok, num_sentinels=128, mode_tokens="paper")
    stream = kjv_lm_data(2048).train.numpy()
    cases: dict[str, Callable[[], object]] = {}
    for i, d in enumerate(UL2_PAPER_MIXTURE.denoisers):
        col = DataCollatorForUL2(
            tok, Mixture((d,), (1.0,)), mode_tokens=None, input_length=INPUT_LENGTH
        )
        ex = examples_for(col, stream, BATCH)
        cases[f"ours {i}"] = lambda col=col, ex=ex: col(ex)
        if d.is_prefix_lm:
            continue  # the example collator has no prefix LM
        base = T5MLMBaseline(
            tok.eos_token_id,
            tok.convert_tokens_to_ids("<extra_id_0>"),
            d.noise_density,
            d.mean_noise_span_length,
        )
        assert base(ex)["input_ids"].shape == (BATCH, INPUT_LENGTH)
        cases[f"base {i}"] = lambda base=base, ex=ex: base(ex)
    mixes = {
        "encoder_decoder": {},
        "decoder_only, prefix_lm_mask=False": {"arch": "decoder_only", "prefix_lm_mask": False},
        "decoder_only, compact_mask=True": {"arch": "decoder_only", "compact_mask": True},
        "decoder_only, mask_dtype=torch.bool": {"arch": "decoder_only", "mask_dtype": torch.bool},
        "decoder_only (float32 4-D mask)": {"arch": "decoder_only"},
    }
    for label, kw in mixes.items():
        col = DataCollatorForUL2(tok, UL2_PAPER_MIXTURE, input_length=INPUT_LENGTH, **kw)
        ex = examples_for(col, stream, BATCH)
        cases[f"mix {label}"] = lambda col=col, ex=ex: col(ex)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for rnd in range(WARMUP + REPEATS):
        for name, fn in cases.items():
            start = time.process_time()
            fn()
            if rnd >= WARMUP:
                times[name].append(time.process_time() - start)
    per_ex = {name: statistics.median(t) / BATCH for name, t in times.items()}
    print(f"batch {BATCH}, input length {INPUT_LENGTH}, torch threads {torch.get_num_threads()}")
    print("| denoiser | DataCollatorForUL2 (examples / s) | T5 MLM example logic | ratio |")
    print("|---|---:|---:|---:|")
    base_mix = 0.0
    mix = UL2_PAPER_MIXTURE
    for i, (d, rate) in enumerate(zip(mix.denoisers, mix.rates, strict=True)):
        ours = per_ex[f"ours {i}"]
        base = per_ex.get(f"base {i}")
        # the baseline's mixture cost: its own time per span denoiser, ours for S (generous)
        base_mix += rate * (base if base is not None else ours)
        if base is None:
            print(f"| {d.name} | {1 / ours:,.0f} | - | - |")
        else:
            print(f"| {d.name} | {1 / ours:,.0f} | {1 / base:,.0f} | {base / ours:.2f}x |")
    for label in mixes:
        ours = per_ex[f"mix {label}"]
        print(
            f"| paper mixture, {label} | {1 / ours:,.0f} | {1 / base_mix:,.0f} | "
            f"{base_mix / ours:.2f}x |"
        )


if __name__ == "__main__":
    main()
