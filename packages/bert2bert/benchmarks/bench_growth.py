"""Growth time and peak memory: a BERT-base-sized target from a half-width source.

Recipe (CPU, from the repository root):

    OMP_NUM_THREADS=2 uv run python packages/bert2bert/benchmarks/bench_growth.py

Source: BertForMaskedLM L12 D384 H6 F1536 (head dim 64, vocab 30522), random weights
built from its config (no download). Target: BERT-base, L12 D768 H12 F3072 (~110M params).
Compares `bert2bert(..., "fpi")` (vectorised index_select, target built on the meta device
and filled in) with a naive loop in the style of the public reference
(zxhcelestes/bert2BERT expand.py: the target built normally, then every new row / column
copied one at a time in Python). Both produce identical tensors (checked). Peak memory is the
process's resident high-water mark above the level before the call (source model loaded).
"""

from __future__ import annotations

import argparse
import gc
import platform
import time

import torch
import transformers

from trainforge_bert2bert import ExpansionPlan, adapter_for, bert2bert
from trainforge_bert2bert.expand import _axes
from trainforge_core.bench import peak_memory
from trainforge_core.surgery import count_parameters


def _cfg(layers, hidden, heads, ffn):
    return transformers.BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=ffn,
    )


def naive_grow(small, big_config, plan, untie=True):
    """Row-by-row copy loop (the reference's style), FPI, one global map."""
    cfg = big_config.__class__.from_dict(big_config.to_dict())
    cfg.tie_word_embeddings = not untie
    big = transformers.BertForMaskedLM(cfg)
    adapter = adapter_for(small)
    src = small.state_dict()
    maps = {k: plan.index(k) for k in ("D", "H", "F")}
    state = {}
    for name in big.state_dict():
        w = src[name]
        role = adapter.role(name, tied=not untie)
        out_axis, in_axis = _axes(role)
        u = w
        if role.out is not None:
            idx = maps[role.out][0]
            new = (
                torch.empty_like(u.narrow(out_axis, 0, 1))
                .expand(*[len(idx) if a == out_axis else s for a, s in enumerate(u.shape)])
                .contiguous()
            )
            for j in range(len(idx)):
                new.select(out_axis, j).copy_(u.select(out_axis, int(idx[j])))
            u = new
        if role.inp is not None and in_axis is not None:
            idx, cnt, _ = maps[role.inp]
            new = torch.empty(
                *[len(idx) if a == in_axis else s for a, s in enumerate(u.shape)], dtype=u.dtype
            )
            for i in range(len(idx)):
                new.select(in_axis, i).copy_(u.select(in_axis, int(idx[i])) / float(cnt[i]))
            u = new
        state[name] = u
    big.load_state_dict(state)
    return big


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    small = transformers.BertForMaskedLM(_cfg(12, 384, 6, 1536)).eval()
    big_cfg = _cfg(12, 768, 12, 3072)
    plan = ExpansionPlan.from_configs(small.config, big_cfg, seed=0)
    rows = []
    for name, fn in (
        ("bert2bert (vectorised)", lambda: bert2bert(small, big_cfg, "fpi", plan=plan)),
        ("naive copy loop", lambda: naive_grow(small, big_cfg, plan)),
    ):
        times = []
        for _ in range(args.repeats):
            gc.collect()
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
            del out
        gc.collect()
        peak = peak_memory(fn)
        rows.append((name, sorted(times)[len(times) // 2], peak))
    ours = bert2bert(small, big_cfg, "fpi", plan=plan)
    ref = naive_grow(small, big_cfg, plan)
    a, b = ours.state_dict(), ref.state_dict()
    max_diff = max((a[k] - b[k]).abs().max().item() for k in a)
    n_big = count_parameters(ours)
    target_bytes = sum(t.numel() * t.element_size() for t in a.values())
    print(
        f"source {count_parameters(small):,} params -> target {n_big:,} params "
        f"({target_bytes / 2**20:.0f} MiB fp32); max |ours - naive| = {max_diff:.2e}"
    )
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{platform.processor() or platform.machine()}, threads {torch.get_num_threads()}"
    )
    print("| method | median time (s) | peak memory (MiB) | peak / target size |")
    print("|---|---|---|---|")
    for name, t, peak in rows:
        print(f"| {name} | {t:.2f} | {peak / 2**20:.0f} | {peak / target_bytes:.2f} |")


if __name__ == "__main__":
    main()
