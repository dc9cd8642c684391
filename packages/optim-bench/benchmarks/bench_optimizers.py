"""Step time and state memory of every optimizer against fused AdamW; Newton-Schulz FLOP rate.

Recipe (from the repository root)::

    uv run python packages/optim-bench/benchmarks/bench_optimizers.py   # 10M + 50M, CPU
    uv run python packages/optim-bench/benchmarks/bench_optimizers.py --sizes 10M --rounds 3
    uv run python packages/optim-bench/benchmarks/bench_optimizers.py --device cuda   # a GPU

Parameters: a Llama-shaped model from ``trainforge_core.models.tiny_llama`` (vocab 8192,
tied embeddings): "10M" = hidden 384 x 4 layers, "50M" = hidden 640 x 8 layers. Every
optimizer of ``build_optimizer`` (plus the public implementations we do not use:
``torch.optim.NAdam``, pytorch-optimizer's ``SOAP`` and ``Muon``) steps on the same fixed
random gradients, round-robin: one step each per round, order rotated every round, after
two warm-up steps. The table gives the median step time, its median ratio to fused (or
foreach, on CPU) AdamW in the same round, the optimizer state in MB (tensor bytes in
``state_dict()``), and the step as a fraction of one forward+backward of the model at
batch 16 x 512 tokens (``--seq`` / ``--batch`` change it). Newton-Schulz: achieved GFLOP/s
of ``newton_schulz5`` (5 steps, in the working dtype) on each distinct hidden matrix shape
against a plain ``torch.matmul`` of the same sizes, in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from trainforge_core.bench import median_time
from trainforge_core.models import tiny_llama
from trainforge_optim_bench import (
    BASELINES,
    OPTIMIZERS,
    build_optimizer,
    newton_schulz5,
    newton_schulz_flops,
)
from trainforge_optim_bench.grouping import decay_groups

SOAP_PRESET = BASELINES["soap"]
SIZES = {"10M": (384, 4, 6), "50M": (640, 8, 10), "smoke": (64, 1, 4)}  # hidden, layers, heads


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    total = 0

    def walk(x: object) -> None:
        nonlocal total
        if isinstance(x, torch.Tensor):
            total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    walk(opt.state_dict().get("state", opt.state_dict()))
    return total


def _public(model: torch.nn.Module) -> dict[str, Callable[[], torch.optim.Optimizer]]:
    import pytorch_optimizer as po

    return {
        "torch NAdam(decoupled)": lambda: torch.optim.NAdam(
            decay_groups(model, 0.1), lr=1e-3, decoupled_weight_decay=True
        ),
        # the settings of ours (the paper's tuned preset: a basis refresh every step) and
        # the same dimension cap; pytorch-optimizer's defaults (refresh every 10 steps, cap
        # 10000, which also rotates the vocabulary axis) are another algorithm's cost
        "pytorch-optimizer SOAP": lambda: po.SOAP(
            decay_groups(model, SOAP_PRESET["weight_decay"]),
            lr=1e-3,
            betas=(SOAP_PRESET["beta1"], SOAP_PRESET["beta2"]),
            shampoo_beta=SOAP_PRESET["shampoo_beta"],
            eps=SOAP_PRESET["eps"],
            precondition_frequency=SOAP_PRESET["precondition_frequency"],
            max_precondition_dim=1024,
        ),
        "pytorch-optimizer Muon": lambda: po.Muon(
            [{"params": [p for p in model.parameters() if p.ndim == 2], "use_muon": True}],
            lr=1e-3,
        ),
    }


def bench(size: str, device: str, rounds: int, batch: int, seq: int) -> None:
    hidden, layers, heads = SIZES[size]
    model = tiny_llama(
        vocab_size=8192,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        max_position_embeddings=seq,
    ).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    grads = {p: torch.randn_like(p) * 1e-3 for p in model.parameters()}
    x = torch.randint(0, 8192, (batch, seq), device=device)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        model(input_ids=x, labels=x).loss.backward()

    fb = median_time(fwd_bwd, warmup=1, repeats=3, device=device).median
    fused = device == "cuda"
    builders: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "AdamW (fused)" if fused else "AdamW (foreach)": lambda: torch.optim.AdamW(
            decay_groups(model, 0.1), lr=1e-3, fused=fused or None
        )
    }
    for name in OPTIMIZERS:
        kw = {"max_precond_dim": 1024} if name == "soap" else {}
        builders[name] = lambda n=name, k=kw: build_optimizer(n, model, lr=1e-3, **k)
    builders.update(_public(model))
    opts = {}
    for name, make in builders.items():
        opts[name] = make()
    snapshot = [p.detach().clone() for p in model.parameters()]

    def step(opt: torch.optim.Optimizer) -> float:
        for p, g in grads.items():
            p.grad = g
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    names = list(opts)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds + 2):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t = step(opts[n])
            with torch.no_grad():  # keep the parameters where they were
                for p, s in zip(model.parameters(), snapshot, strict=True):
                    p.copy_(s)
            if r >= 2:
                times[n].append(t)
    base = names[0]
    print(
        f"\n## {size}: {n_params / 1e6:.1f}M parameters, {device}; forward+backward at "
        f"{batch}x{seq} tokens: {fb * 1e3:.0f} ms; {rounds} rounds"
    )
    print("| optimizer | step (ms) | x AdamW | state (MB) | step / fwd+bwd |")
    print("| --- | --- | --- | --- | --- |")
    for n in names:
        ratio = statistics.median(t / b for t, b in zip(times[n], times[base], strict=True))
        med = statistics.median(times[n])
        print(
            f"| {n} | {med * 1e3:.1f} | {ratio:.2f} | {_state_bytes(opts[n]) / 2**20:.1f} | "
            f"{med / fb:.3f} |"
        )
    shapes = sorted(
        {tuple(p.shape) for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n}
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    print(f"\nNewton-Schulz ({dtype}) vs torch.matmul of the same sizes:")
    print("| shape | NS GFLOP/s | matmul GFLOP/s | NS / matmul |")
    print("| --- | --- | --- | --- |")
    for shape in shapes:
        g = torch.randn(*shape, device=device, dtype=dtype)
        m, n = min(shape), max(shape)
        a = torch.randn(m, n, device=device, dtype=dtype)
        b = torch.randn(n, m, device=device, dtype=dtype)
        ns = median_time(lambda g=g: newton_schulz5(g), warmup=2, repeats=5, device=device).median
        mm = median_time(lambda a=a, b=b: a @ b, warmup=2, repeats=5, device=device).median
        ns_rate = newton_schulz_flops(*shape) / ns / 1e9
        mm_rate = 2 * m * n * m / mm / 1e9
        print(
            f"| {shape[0]}x{shape[1]} | {ns_rate:.1f} | {mm_rate:.1f} | {ns_rate / mm_rate:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["10M", "50M"], choices=list(SIZES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}")
    for size in args.sizes:
        bench(size, args.device, args.rounds, args.batch, args.seq)


if __name__ == "__main__":
    main()
