"""SLTrainLinear against a dense nn.Linear: training-state memory and forward+backward time.

Recipe (the issue's benchmark): square layers d = 1024 and 2048, rank 128, sparsity 0.03,
alpha 32, one batch of 8 x 256 tokens, float32 on CPU. Three layers are compared in one run:

- ``dense``: ``nn.Linear(d, d)``;
- ``sltrain``: this package's :class:`SLTrainLinear` (int32 support, torch reference
  materialisation with the scale applied to the small factor B, recompute in backward);
- ``reference-algo``: the algorithm of andyjm3/SLTrain:sparse-lora/sparse_linear.cpp
  re-expressed as a Python ``autograd.Function`` (``lora_A * scale`` built outside the
  function, ``B.mm(sA)``, ``scatter_add_`` with an int64 index, the same backward). It is not
  the compiled extension; it shows what the reference's order of operations costs here.

Memory: each variant runs in a fresh subprocess that, after a small warm-up, builds the input
(8 MiB at d=1024), the layer and an AdamW optimiser and takes two training steps (forward,
backward, step) inside ``trainforge_core.bench.peak_memory`` (CPU: the process's resident
high-water mark above the level before; it includes activations, W transients and the
one-off support draw). The analytic bytes of parameters + gradients + Adam moments + buffers are
printed beside it. Time: ``trainforge_core.bench.median_time`` of forward+backward (grads set
to None before each call), variants interleaved round by round so that load from other
processes on a shared machine hits all of them alike; the load average is printed before and
after.

Run from the workspace root::

    uv run python packages/sltrain/benchmarks/bench_linear.py            # both sizes
    uv run python packages/sltrain/benchmarks/bench_linear.py --sizes 1024 --repeats 5
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
from trainforge_sltrain import SLTrainLinear, training_state_bytes

RANK, SPARSITY, ALPHA, TOKENS = 128, 0.03, 32.0, 8 * 256


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
    layer = SLTrainLinear(d, d, RANK, SPARSITY, ALPHA, generator=g)
    with torch.no_grad():  # trained state: B != 0 (timing does not depend on it)
        layer.lora_B.normal_(std=0.02, generator=g)
    return layer if variant == "sltrain" else ReferenceAlgoLinear(layer)


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


def measure_time(d: int, variants: list[str], repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(TOKENS, d, requires_grad=True)
    grad = torch.randn(TOKENS, d)
    layers = {v: build(v, d) for v in variants}

    def run(layer):
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        layer(x).backward(grad)

    for layer in layers.values():  # warm-up
        run(layer)
        run(layer)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeats):
        for v, layer in layers.items():
            start = time.perf_counter()
            run(layer)
            times[v].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "D"))
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    variants = ["dense", "sltrain", "reference-algo"]
    load0 = os.getloadavg()
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
        f"load average before {load0[0]:.1f}"
    )
    print(
        f"# rank {RANK}, sparsity {SPARSITY}, {TOKENS} tokens, float32, "
        f"median of {args.repeats} interleaved fwd+bwd calls"
    )
    print(
        "| d | layer | train-state bytes (analytic) | peak RSS, 2 AdamW steps | "
        "ratio vs dense | fwd+bwd ms | ratio vs dense |"
    )
    print("|---|---|---|---|---|---|---|")
    for d in args.sizes:
        mem = {v: measure_memory(v, d) for v in variants}
        t = measure_time(d, variants, args.repeats)
        for v in variants:
            print(
                f"| {d} | {v} | {mem[v]['analytic'] / 2**20:.1f} MiB | "
                f"{mem[v]['peak'] / 2**20:.1f} MiB | "
                f"{mem[v]['peak'] / mem['dense']['peak']:.2f} | {1e3 * t[v]:.1f} | "
                f"{t[v] / t['dense']:.3f} |",
                flush=True,
            )
    print(f"# load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
