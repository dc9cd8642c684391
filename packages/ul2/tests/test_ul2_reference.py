"""Our vectorised span corruption equals a plain, per-row re-implementation of T5's
algorithm (t5/data/preprocessors.py: random_spans_noise_mask, _random_segmentation,
noise_span_to_unique_sentinel) fed the same random keys, and every chunk can be rebuilt
from its inputs and targets through the sentinels."""

from __future__ import annotations

import numpy as np
import pytest

from trainforge_ul2 import UL2_PAPER_MIXTURE, DataCollatorForUL2, Denoiser, Mixture


def t5_random_segmentation(num_items: int, num_segments: int, keys: list[float]) -> list[int]:
    # T5: first_in_segment = pad(shuffle(range(n - 1) < k - 1), [[1, 0]]). The shuffle
    # here is keyed: item j of the indicator goes where the j-th smallest key sits.
    base = [1 if i < num_segments - 1 else 0 for i in range(num_items - 1)]
    order = sorted(range(num_items - 1), key=lambda i: keys[i])
    shuffled = [0] * (num_items - 1)
    for rank, position in enumerate(order):
        shuffled[position] = base[rank]
    first_in_segment = [0, *shuffled]
    segment_id, acc = [], 0
    for f in first_in_segment:
        acc += f
        segment_id.append(acc)
    lengths = [0] * num_segments
    for s in segment_id:  # segment_sum(ones, segment_id)
        lengths[s] += 1
    return lengths


def t5_mask(length: int, density: float, mu: float, noise_keys, nonnoise_keys) -> list[bool]:
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(round(num_noise / mu), 1)
    num_nonnoise = length - num_noise
    noise_len = t5_random_segmentation(num_noise, num_spans, list(noise_keys))
    nonnoise_len = t5_random_segmentation(num_nonnoise, num_spans, list(nonnoise_keys))
    interleaved = [x for pair in zip(nonnoise_len, noise_len, strict=True) for x in pair]
    starts, acc = [], 0
    for x in interleaved[:-1]:
        acc += x
        starts.append(acc)
    indicator = [0] * length
    for s in starts:
        indicator[s] += 1
    mask, span_num = [], 0
    for v in indicator:
        span_num += v
        mask.append(span_num % 2 == 1)
    return mask


def t5_unique_sentinel(tokens: list[int], mask: list[bool], sentinels: list[int]) -> list[int]:
    out, k = [], 0
    for i, (t, m) in enumerate(zip(tokens, mask, strict=True)):
        prev = mask[i - 1] if i > 0 else False
        if m and not prev:
            out.append(sentinels[k])
            k += 1
        elif not m:
            out.append(t)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("den_index", range(6))
def test_span_corruption_equals_plain_t5(tok, stream, seed, den_index):
    den = UL2_PAPER_MIXTURE.denoisers[den_index]
    col = DataCollatorForUL2(
        tok, Mixture((den,), (1.0,)), mode_tokens=None, input_length=512, add_sentinels=True
    )
    raw = col.raw_lengths[0]
    batch = 5
    chunks = [stream[i * raw : (i + 1) * raw] for i in range(batch)]
    out = col.collate([{"input_ids": c, "denoiser": 0} for c in chunks], rng=seed)
    # The same keys, drawn as documented: all noise keys, then all non-noise keys.
    rng = np.random.default_rng(seed)
    n_noise = min(max(round(raw * den.noise_density), 1), raw - 1)
    noise_keys = rng.random((batch, n_noise - 1))
    nonnoise_keys = rng.random((batch, raw - n_noise - 1))
    sent = col.sentinel_ids.tolist()
    eos = tok.eos_token_id
    for b, chunk in enumerate(chunks):
        mask = t5_mask(
            raw, den.noise_density, den.mean_noise_span_length, noise_keys[b], nonnoise_keys[b]
        )
        inputs = [*t5_unique_sentinel(chunk.tolist(), mask, sent), eos]
        targets = [*t5_unique_sentinel(chunk.tolist(), [not m for m in mask], sent), eos]
        assert len(inputs) == 512
        assert out["input_ids"][b].tolist() == inputs
        labels = out["labels"][b]
        assert labels[labels != -100].tolist() == targets


def reconstruct(inputs: list[int], targets: list[int], sentinels: set[int]) -> list[int]:
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in sentinels:
            current = t
            spans[t] = []
        else:
            spans[current].append(t)
    out: list[int] = []
    for t in inputs:
        out.extend(spans[t] if t in sentinels else [t])
    return out


@pytest.mark.parametrize("arch", ["encoder_decoder", "decoder_only"])
def test_every_chunk_round_trips_through_the_sentinels(tok, stream, arch):
    col = DataCollatorForUL2(tok, input_length=256, arch=arch, add_sentinels=True)
    sentinels = set(col.sentinel_ids.tolist())
    eos, pad = tok.eos_token_id, tok.pad_token_id
    examples, start = [], 0
    for rep in range(6):
        for d, raw in enumerate(col.raw_lengths):
            # full chunks and short ones (a stream's tail): rows with fewer spans than the
            # batch's widest are corrupted in the same pass
            n = raw if rep % 2 == 0 else max(5, raw // (rep + 1))
            examples.append({"input_ids": stream[start : start + n], "denoiser": d})
            start += n
    out = col(examples)
    for ex, ids, labels in zip(examples, out["input_ids"], out["labels"], strict=True):
        plan = col.plans[ex["denoiser"]]
        ids, labels = ids.tolist(), labels.tolist()
        m = len(plan.mode_ids)
        assert tuple(ids[:m]) == plan.mode_ids
        if arch == "encoder_decoder":
            n_in = len(ids) - ids[::-1].index(eos)  # inputs end at their EOS
            inputs = ids[m : n_in - 1]
            targets = [t for t in labels if t != -100][:-1]
            assert all(t == pad for t in ids[n_in:])
        else:
            is_target = [t != -100 for t in labels]
            first_t = is_target.index(True)
            inputs = ids[m : first_t - 1]
            targets = [t for t, k in zip(labels, is_target, strict=True) if k][:-1]
        if plan.denoiser.is_prefix_lm:
            rebuilt = inputs + targets
        else:
            rebuilt = reconstruct(inputs, targets, sentinels)
        assert rebuilt == ex["input_ids"].tolist()


def test_sentinels_are_used_in_t5_order(tok, stream):
    col = DataCollatorForUL2(
        tok, Mixture((Denoiser("R", 0.15, 3.0),), (1.0,)), mode_tokens=None, input_length=128
    )
    out = col([stream[:500]])
    used = [t for t in out["input_ids"][0].tolist() if t in set(col.sentinel_ids.tolist())]
    assert used == col.sentinel_ids[: len(used)].tolist()
    assert col.sentinel_ids[0] == tok.convert_tokens_to_ids("<extra_id_0>")
