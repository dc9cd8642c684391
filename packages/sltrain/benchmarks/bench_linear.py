"""SLTrainLinear against a dense nn.Linear: forward+backward time and training-state memory.

Recipe (issue 27, item 5): square layers d = 1024, 2048 and 4096, rank 128, sparsity 0.03,
alpha 32, 2,048 and 8,192 tokens per call, float32 on CPU. Layers compared in one process:

- ``dense``: ``nn.Linear(d, d)``;
- ``materialize``: :class:`SLTrainLinear` with ``algorithm="materialize"`` (W = scale B A + S
  built in the forward and again in the backward; the reference extension's algorithm);
- ``factored``: ``algorithm="factored"`` (``x A^T B^T scale`` plus CSR products, the values'
  gradient by ``torch.sparse.sampled_addmm``; W never formed);
- ``auto``: what ``algorithm="auto"`` (the default) picks by its rule (``choose_algorithm``:
  FLOPs weighted by measured costs, ``sparse_mac_cost``), printed beside every row and in
  one ``# auto`` line per shape with the picked variant's measured ratio (its time is the
  picked variant's, so it is not timed again);
- ``reference-algo`` (``--variants``): andyjm3/SLTrain:sparse-lora/sparse_linear.cpp
  re-expressed as a Python ``autograd.Function`` (not the compiled extension).

Time: each round calls every variant once (forward+backward, grads set to None first), the
order alternating between rounds (forward, then reversed), so load from other processes hits
all alike; each variant's ratio to dense is taken per round (paired) and the median and the
range over rounds are printed, with the load average before and after. The bound column is
the picked algorithm's cost relative to dense by ``algorithm_costs`` (the rule's prediction of
the ratio: W's build and the sparse multiply-adds weighted by their measured costs), and the
unweighted FLOP ratio beside it; each ``# auto`` line also prints the two costs the rule
fits (``sparse_mac_cost``, ``MATERIALIZE_BUILD_COST``) as this run implies them, for a
refit. One torch thread unless ``--threads`` says otherwise (thread count and load change the
ratios: the CSR kernels suffer more from other processes than the dense GEMMs).

Memory (``--memory``): each variant in a fresh subprocess takes two AdamW steps inside
``trainforge_core.bench.peak_memory`` (resident high-water mark above the level before).

Run from the workspace root::

    uv run python packages/sltrain/benchmarks/bench_linear.py --rounds 3  # all issue shapes
    uv run python packages/sltrain/benchmarks/bench_linear.py --sizes 1024 --tokens 2048 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from trainforge_core.bench import peak_memory
from trainforge_sltrain import (
    SLTrainLinear,
    algorithm_costs,
    choose_algorithm,
    sparse_mac_cost,
    training_state_bytes,
)
from trainforge_sltrain.linear import MATERIALIZE_BUILD_COST

RANK, SPARSITY, ALPHA, TOKENS = 128, 0.03, 32.0, 2048


class _ReferenceFn(torch.autograd.Function):
    """andyjm3/SLTrain:sparse-lora/sparse_linear.cpp, step for step, in Python."""

    @staticmethod
    def forward(ctx, x, B, sA, values, index, bias):
        ctx.save_for_backward(x, B, sA, values, index)
        W = B.mm(sA)
        W.view(-1).scatter_add_(0, index, values)
        return nn.functional.linear(x, W, bias)

    @staticmethod
    def backward(ctx, g):
        x, B, sA, values, index = ctx.saved_tensors
        W = B.mm(sA)
        W.view(-1).scatter_add_(0, index, values)
        g2 = g.reshape(-1, g.shape[-1])
        grad_x = g2.mm(W).view_as(x)
        grad_w = g2.t().mm(x.reshape(-1, x.shape[-1]))
        return (
            grad_x,
            grad_w.mm(sA.t()),
            B.t().mm(grad_w),
            grad_w.view(-1).gather(0, index),
            None,
            g2.sum(0),
        )


class ReferenceAlgoLinear(nn.Module):
    def __init__(self, layer: SLTrainLinear) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(layer.lora_A.detach().clone())
        self.lora_B = nn.Parameter(layer.lora_B.detach().clone())
        self.sparse_value = nn.Parameter(layer.sparse_value.detach().clone())
        self.register_buffer("sparse_index", layer.sparse_index.long())
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.scaling = layer.scaling

    def forward(self, x):
        return _ReferenceFn.apply(
            x,
            self.lora_B,
            self.lora_A * self.scaling,
            self.sparse_value,
            self.sparse_index,
            self.bias,
        )


def build(variant: str, d: int) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    if variant == "dense":
        return nn.Linear(d, d)
    algorithm = variant if variant in ("materialize", "factored", "auto") else "materialize"
    layer = SLTrainLinear(d, d, RANK, SPARSITY, ALPHA, generator=g, algorithm=algorithm)
    with torch.no_grad():  # trained state: B != 0 (timing does not depend on it)
        layer.lora_B.normal_(std=0.02, generator=g)
    return ReferenceAlgoLinear(layer) if variant == "reference-algo" else layer


def _memory_child(variant: str, d: int) -> None:
    torch.manual_seed(0)
    holder: dict = {}

    def steps(size: int, n: int = 2):
        x = torch.randn(TOKENS, size)
        layer = build(variant, size)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()
            opt.step()
        holder["layer"], holder["opt"] = layer, opt

    steps(128)  # warm-up: libraries, thread pools and allocator state are not counted
    holder.clear()
    peak = peak_memory(lambda: steps(d), "cpu")
    state = training_state_bytes(holder["layer"])
    print(json.dumps({"peak": peak, "analytic": state["total"]}))


def measure_memory(variant: str, d: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", variant, str(d)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_time(
    d: int, tokens: int, variants: list[str], rounds: int
) -> dict[str, tuple[float, float, float, float]]:
    """Per variant: (median ms, median paired ratio to dense, min ratio, max ratio)."""
    torch.manual_seed(0)
    x = torch.randn(tokens, d, requires_grad=True)
    grad = torch.randn(tokens, d)
    layers = {v: build(v, d) for v in variants}

    def run(layer):
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(grad)

    for layer in layers.values():  # warm-up (and the factored path's one-off CSR build)
        run(layer)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(rounds):
        order = variants if i % 2 == 0 else variants[::-1]
        for v in order:
            start = time.perf_counter()
            run(layers[v])
            times[v].append(time.perf_counter() - start)
    out = {}
    for v in variants:
        ratios = [t / td for t, td in zip(times[v], times["dense"], strict=True)]
        out[v] = (
            1e3 * statistics.median(times[v]),
            statistics.median(ratios),
            min(ratios),
            max(ratios),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants", nargs="+", default=["dense", "materialize", "factored"],
        help="dense is always included; also: reference-algo",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--memory", action="store_true", help="also peak RSS per variant")
    parser.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "D"))
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    variants = ["dense", *[v for v in args.variants if v != "dense"]]
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}; rank {RANK}, "
        f"sparsity {SPARSITY}, float32; {args.rounds} rounds, order alternated, "
        "ratios paired per round"
    )
    print(
        "| d | tokens | layer | fwd+bwd ms (median) | ratio vs dense: median [min, max] | "
        "auto picks | rule's cost of the pick / dense (FLOPs alone) | load before/after |"
    )
    print("|---|---|---|---|---|---|---|---|")
    picks = []
    for d in args.sizes:
        nnz = int(SPARSITY * d * d)
        for tokens in args.tokens:
            load0 = os.getloadavg()[0]
            t = measure_time(d, tokens, variants, args.rounds)
            load1 = os.getloadavg()[0]
            pick = choose_algorithm(tokens, d, d, RANK, nnz)
            mat, fac = algorithm_costs(tokens, d, d, RANK, nnz)
            dense = 3 * tokens * d * d
            raw = 1 + 4 * RANK / (3 * tokens) if pick == "materialize" else 2 * RANK / d + SPARSITY
            cost = (mat if pick == "materialize" else fac) / dense
            for v in variants:
                ms, med, lo, hi = t[v]
                print(
                    f"| {d} | {tokens} | {v} | {ms:.1f} | {med:.3f} [{lo:.3f}, {hi:.3f}] | "
                    f"{pick} | {cost:.3f} ({raw:.3f}) | {load0:.1f}/{load1:.1f} |",
                    flush=True,
                )
            if pick in t:
                _, med, lo, hi = t[pick]
                best = min((v for v in variants if v in ("materialize", "factored")),
                           key=lambda v: t[v][1])  # fmt: skip
                picks.append(
                    f"# auto d={d} tokens={tokens}: picks {pick}, measured {med:.3f}x dense "
                    f"[{lo:.3f}, {hi:.3f}] (rule predicted {cost:.3f}x); fastest measured "
                    f"here: {best} {t[best][1]:.3f}x"
                )
                if "factored" in t and "materialize" in t:
                    # What this run implies for the rule's two fitted costs (linear.py's fit).
                    c = (t["factored"][1] - 2 * RANK / d) / SPARSITY
                    w = (t["materialize"][1] - 1) / (4 * RANK / (3 * tokens))
                    picks[-1] += (
                        f"; implied sparse_mac_cost {c:.1f} (rule {sparse_mac_cost(nnz):.1f}), "
                        f"W-build cost {w:.2f} (rule {MATERIALIZE_BUILD_COST:.2f})"
                    )
                print(picks[-1], flush=True)
            if args.memory:
                for v in variants:
                    mem = measure_memory(v, d)
                    print(
                        f"# memory d={d} {v}: analytic train state "
                        f"{mem['analytic'] / 2**20:.1f} MiB, peak RSS of 2 AdamW steps "
                        f"({TOKENS} tokens) {mem['peak'] / 2**20:.1f} MiB",
                        flush=True,
                    )
    print("\n".join(picks))


if __name__ == "__main__":
    main()
