"""Optimizer step time: SophiaG against AdamW (foreach / fused) and the reference SophiaG.

Recipe (from the repository root)::

    uv sync --all-packages --group bench      # sophia-opt: the reference SophiaG
    uv run python packages/sophia/benchmarks/bench_step.py            # 10M and 100M, CPU
    uv run python packages/sophia/benchmarks/bench_step.py --threads 1   # busy machine
    uv run python packages/sophia/benchmarks/bench_step.py --sizes 10M --device cuda
    uv run python packages/sophia/benchmarks/bench_step.py --paired --threads 2 --rounds 25

``--paired`` is issue #14.7's measurement: fused AdamW and ``SophiaG(fused=True)`` on two
separate parameter sets of the same shapes (10.3M floats in 99 tensors: 8 layers with
biases and LayerNorms, d 288, vocab 8192), stepping alternately (the order flipped every
round), after warm-up; it prints the medians and the median of the per-round ratios.
The goal is at most 1.3x; on CPU ``SophiaG(fused=True)`` runs one C loop per step over all
float32 tensors on all torch threads (trainforge-kernels 0.2.2; before, a
``torch.compile``d loop that measured 2.10x with 2 threads and 1.32x with 1 on an idle
machine). Final numbers come from an idle machine: on a loaded one, the two-thread
times swing by several times from round to round (both optimizers wait for a core).

Parameters are transformer-shaped fp32 tensors (per layer: qkv, out, MLP up/down, two
norms; plus an embedding). All optimizers run in one process on one shared set of
parameters and gradients (each keeps its own state), round-robin, one step each per
round (the order rotated each round), after warm-up. The table gives each optimizer's
median step time and the median over rounds of its time divided by fused AdamW's in the
same round: paired within a round, the ratio does not drift with the machine's speed,
which on a shared 2-core machine moves by 30% from one minute to the next.
SophiaG optimizers have a Hessian EMA set by one ``update_hessian()`` first, so their
clip is mixed, as in training. The reference is ``sophia_opt.SophiaG`` (the PyPI
repackaging of Liuhong99/Sophia:sophia.py) when installed; otherwise an in-script plain
re-statement of its per-tensor update loop stands for it (the table says which).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from trainforge_sophia import SophiaG

SIZES = {
    # name: (d_model, layers, vocab) -> about 10M / 100M parameters
    "10M": (384, 4, 8192),
    "100M": (768, 12, 20000),
}


def transformer_shapes(d: int, layers: int, vocab: int) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d), (d,), (d,)]
    shapes.append((d,))
    return shapes


class PlainReferenceSophiaG(torch.optim.Optimizer):
    """Stand-in for sophia_opt.SophiaG: the reference's per-tensor loop, re-stated."""

    def __init__(self, params, lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay))

    @torch.no_grad()
    def update_hessian(self):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["hessian"] = torch.zeros_like(p)
                state["hessian"].mul_(group["betas"][1]).addcmul_(
                    p.grad, p.grad, value=1 - group["betas"][1]
                )

    @torch.no_grad()
    def step(self, bs=5120):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                m, h = state["exp_avg"], state["hessian"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.mul_(group["betas"][0]).add_(p.grad, alpha=1 - group["betas"][0])
                ratio = (m.abs() / (group["rho"] * bs * h + 1e-15)).clamp(None, 1)
                p.addcmul_(m.sign(), ratio, value=-group["lr"])


def reference_class():
    try:
        from sophia_opt import SophiaG as Ref

        return Ref, "sophia_opt.SophiaG (reference)"
    except ImportError:
        return PlainReferenceSophiaG, "reference loop re-stated (sophia-opt not installed)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(size: str, device: torch.device, rounds: int,
          warmup: int) -> list[tuple[str, float, float]]:  # fmt: skip
    d, layers, vocab = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape in transformer_shapes(d, layers, vocab):
        p = torch.nn.Parameter((0.02 * torch.randn(shape, generator=gen)).to(device))
        p.grad = (1e-3 * torch.randn(shape, generator=gen)).to(device)
        params.append(p)
    n = sum(p.numel() for p in params)
    lr, bs = 1e-6, 5120  # tiny lr: the shared parameters stay put over the rounds
    ref_cls, ref_name = reference_class()
    makers = {
        "AdamW foreach": lambda: torch.optim.AdamW(params, lr=lr, foreach=True),
        "AdamW fused": lambda: torch.optim.AdamW(params, lr=lr, fused=True),
        ref_name: lambda: ref_cls(params, lr=lr, rho=0.05, weight_decay=0.2),
        "SophiaG (trainforge)": lambda: SophiaG(params, lr=lr, rho=0.05, bs=bs),
        "SophiaG foreach=True": lambda: SophiaG(params, lr=lr, rho=0.05, bs=bs, foreach=True),
        "SophiaG fused=True": lambda: SophiaG(params, lr=lr, rho=0.05, bs=bs, fused=True),
    }
    opts = {}
    for name, make in makers.items():
        opt = make()
        if hasattr(opt, "update_hessian"):
            opt.update_hessian()
        opts[name] = opt

    def step(name, opt):
        if name == ref_name:
            opt.step(bs=bs)
        else:
            opt.step()

    for _ in range(max(warmup, 1)):  # at least one: fused=True builds its loop on step 1
        for name, opt in opts.items():
            step(name, opt)
    times: dict[str, list[float]] = {name: [] for name in opts}
    order = list(opts.items())
    for r in range(rounds):
        # rotated each round: no optimizer always runs right after the same one (the one
        # before leaves the caches and the thread pool in its own state)
        for name, opt in order[r % len(order) :] + order[: r % len(order)]:
            _sync(device)
            start = time.perf_counter()
            step(name, opt)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    print(f"\n{size}: {n / 1e6:.1f}M parameters in {len(params)} tensors on {device}")
    base = times["AdamW fused"]
    return [
        (name, statistics.median(t), statistics.median(a / b for a, b in zip(t, base, strict=True)))
        for name, t in times.items()
    ]


def paired_shapes(d: int = 288, layers: int = 8, vocab: int = 8192) -> list[tuple[int, ...]]:
    """About 10M floats in 99 tensors: per layer qkv, out, MLP up/down with biases and two
    LayerNorms (weight, bias), plus an embedding and a final LayerNorm."""
    shapes: list[tuple[int, ...]] = [(vocab, d)]
    for _ in range(layers):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        shapes += [(d,), (d,), (d,), (d,)]
    return [*shapes, (d,), (d,)]


def bench_paired(rounds: int, warmup: int) -> None:
    def make(seed: int) -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(seed)
        params = []
        for shape in paired_shapes():
            p = torch.nn.Parameter(0.02 * torch.randn(shape, generator=gen))
            p.grad = 1e-3 * torch.randn(shape, generator=gen)
            params.append(p)
        return params

    pa, ps = make(0), make(1)
    adamw = torch.optim.AdamW(pa, lr=1e-6, fused=True)
    sophia = SophiaG(ps, lr=1e-6, rho=0.05, bs=5120, fused=True)
    sophia.update_hessian()  # a mixed clip, as in training
    for _ in range(max(warmup, 1)):  # the first fused step builds (or loads) its loop
        adamw.step()
        sophia.step()
    ta: list[float] = []
    ts: list[float] = []
    for r in range(rounds):
        for opt, times in (
            ((adamw, ta), (sophia, ts)) if r % 2 == 0 else ((sophia, ts), (adamw, ta))
        ):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
    n = sum(p.numel() for p in pa)
    ratio = statistics.median(s / a for a, s in zip(ta, ts, strict=True))
    print(f"\npaired: {n / 1e6:.1f}M floats in {len(pa)} tensors per optimizer, {rounds} rounds")
    print(f"AdamW(fused=True) median {1e3 * statistics.median(ta):.2f} ms, "
          f"SophiaG(fused=True) median {1e3 * statistics.median(ts):.2f} ms, "
          f"median paired ratio {ratio:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--paired", action="store_true", help="issue #14.7's paired ratio only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.paired:
        print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
              f"load average before {os.getloadavg()[0]:.1f}")  # fmt: skip
        bench_paired(args.rounds, args.warmup)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return
    device = torch.device(args.device)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"load average before {load_before[0]:.1f}")  # fmt: skip
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    rows = []
    for size in args.sizes:
        rows += [(size, *row) for row in bench(size, device, args.rounds, args.warmup)]
    print("\n| size | optimizer | median step (ms) | / fused AdamW (paired) |")
    print("| --- | --- | ---: | ---: |")
    for size, name, t, ratio in rows:
        print(f"| {size} | {name} | {1e3 * t:.1f} | {ratio:.2f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
