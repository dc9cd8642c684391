"""Slow: MeCo on a synthetic mixture of sources with distinct statistics (spec 5(d)4).

K=8 sources, each a random bigram LM over 64 symbols that emits only its own random subset of
8 symbols, with hosts "s{k}.com". MeCo (metadata
phase, then 10% cooldown on a disjoint plain pool) and the baseline (plain documents) train
the same tiny Llama for the same steps on the same document tokens.
"""

from __future__ import annotations

import pytest
import torch

from trainforge_meco import MeCoDataset, MeCoFormatter, MeCoSchedule, pack_documents
from trainforge_meco.demo import document_loss, random_rows, train_run

K, V, DOC_LEN, SEQ_LEN = 8, 64, 16, 32
BOS, EOS, PAD = V, V + 1, V + 2
ALPHABET = "URL: s0123456789.com\n"


def _encode(text: str) -> list[int]:
    return [V + 3 + ALPHABET.index(c) for c in text]


def _sources(seed: int) -> torch.Tensor:
    """Source-specific bigram transition matrices [K, V, V]: source k only emits symbols of
    its own random subset of 8 (of 64), with random transition weights inside it."""
    gen = torch.Generator().manual_seed(1000 + seed)
    trans = torch.zeros(K, V, V)
    for k in range(K):
        subset = torch.randperm(V, generator=gen)[:8]
        trans[k][:, subset] = torch.softmax(2.0 * torch.randn(V, 8, generator=gen), dim=-1)
    return trans


def _sample(trans: torch.Tensor, k: int, n: int, gen: torch.Generator) -> list[list[int]]:
    docs = []
    first = trans[k].sum(0)  # the first symbol: uniform-ish over the source's subset
    for _ in range(n):
        x = [int(torch.multinomial(first, 1, generator=gen))]
        for _ in range(DOC_LEN - 1):
            x.append(int(torch.multinomial(trans[k, x[-1]], 1, generator=gen)))
        docs.append(x)
    return docs


def _experiment(
    seed: int, steps: int = 150, batch: int = 16, hidden: int = 64, lr: float = 3e-3
) -> dict[str, float]:
    from trainforge_core.models import tiny_llama

    trans = _sources(seed)
    gen = torch.Generator().manual_seed(seed)
    fmt = MeCoFormatter(_encode, bos_id=BOS, eos_id=EOS)
    host = lambda k: f"https://s{k}.com/"  # noqa: E731
    train = [(k, d) for k in range(K) for d in _sample(trans, k, 60, gen)]
    cool = [(k, d) for k in range(K) for d in _sample(trans, k, 8, gen)]  # disjoint pool
    held = [(k, d) for k in range(K) for d in _sample(trans, k, 6, gen)]

    def pack(examples):
        return pack_documents(examples, SEQ_LEN, "pad", pad_id=PAD)

    plain_rows = pack([fmt(d) for _, d in train + cool])
    meta_rows = pack([fmt(d, host(k)) for k, d in train])
    cool_rows = pack([fmt(d) for _, d in cool])
    schedule = MeCoSchedule(steps)
    out: dict[str, float] = {}
    for name, data in (
        (
            "base",
            MeCoDataset(
                random_rows(plain_rows, seed),
                random_rows(plain_rows, seed + 1),
                MeCoSchedule(steps, 0.0),
                batch,
            ),
        ),
        (
            "meco",
            MeCoDataset(
                random_rows(meta_rows, seed), random_rows(cool_rows, seed + 1), schedule, batch
            ),
        ),
    ):
        model = tiny_llama(
            seed=seed,
            vocab_size=V + 3 + len(ALPHABET),
            hidden_size=hidden,
            num_layers=2,
            num_heads=4,
            max_position_embeddings=SEQ_LEN,
        )
        none = [fmt(d) for _, d in held]
        run = train_run(
            model,
            data,
            batch,
            lr=lr,
            evaluate=lambda m, _n=none: document_loss(m, _n),
            eval_at=[schedule.cooldown_start],
        )
        out[f"{name}_none_at_switch"] = run.curve_loss[0]
        out[f"{name}_none"] = document_loss(model, none)
        out[f"{name}_right"] = document_loss(model, [fmt(d, host(k)) for k, d in held])
        out[f"{name}_wrong"] = document_loss(model, [fmt(d, host((k + 1) % K)) for k, d in held])
    return out


@pytest.mark.slow
def test_meco_right_prefix_helps_wrong_prefix_hurts_and_cooldown_restores_plain_use() -> None:
    results = [_experiment(seed) for seed in range(3)]
    for r in results:
        # conditional inference: the right host lowers the loss, a wrong one raises it
        assert r["meco_right"] < r["meco_none"] - 0.1, r
        assert r["meco_wrong"] > r["meco_right"] + 0.3, r
        # the baseline never saw metadata: a prefix is noise to it, right or wrong alike
        assert abs(r["base_wrong"] - r["base_right"]) < 0.05, r
        # the cooldown on plain documents lowers MeCo's unconditioned loss
        assert r["meco_none"] < r["meco_none_at_switch"] - 0.05, r
    mean = {k: sum(r[k] for r in results) / len(results) for k in results[0]}
    # with the right prefix MeCo beats standard training on plain input (same tokens)
    assert mean["meco_right"] < mean["base_none"], mean
    # Not asserted: the spec's "MeCo unconditioned <= baseline + 0.02". At this toy scale
    # (15 cooldown steps at the tail of the cosine) MeCo stays worse without a prefix; see
    # the README's limits.
