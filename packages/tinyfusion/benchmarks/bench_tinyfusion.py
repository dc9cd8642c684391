"""Sampling throughput of a half-depth pruned DiT against the original, and the search cost.

Recipe (from the repository root):

    uv run python packages/tinyfusion/benchmarks/bench_tinyfusion.py            # CPU, small DiT
    uv run python packages/tinyfusion/benchmarks/bench_tinyfusion.py --device cuda --hidden 1152 \
        --depth 28 --heads 16 --input 32 --patch 2 --batch 64   # DiT-XL/2 shape on a GPU

What it measures (random weights: speed does not depend on them):

1. DDIM sampling throughput (images/s, median of --repeats) of TinyDiT(depth=D) and of the model
   pruned 1:2 to D/2 layers with ``prune_layers`` (the export of ``learn_depth_pruning``). The
   goal is >= 1.9x at half depth (ideal 2x: embedders and the final layer are not pruned).
2. The cost of one search step (gates + LoRA, per-sample masks: every block still runs) relative
   to one plain training step of the original, and the search budget as a fraction of the
   pre-training steps: the reference searches for 1 epoch of ImageNet at batch 128 (~10k steps)
   on a DiT-XL/2 pre-trained for 7M steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainforge_tinyfusion import GaussianDiffusion, TinyDiT, learn_depth_pruning, prune_layers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--input", type=int, default=16)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per sample")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    model = (
        TinyDiT(args.input, args.patch, 4, args.hidden, args.depth, args.heads, num_classes=1000)
        .to(dev)
        .eval()
    )
    pruned = prune_layers(model, list(range(1, args.depth, 2))).eval()
    diff = GaussianDiffusion()
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    shape = (args.batch, 4, args.input, args.input)

    def sample(m):
        return lambda: diff.ddim_sample(m, shape, y, args.steps)

    t_orig = _time(sample(model), args.repeats, dev)
    t_pruned = _time(sample(pruned), args.repeats, dev)

    x = torch.randn(shape, device=dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        loss = diff.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = _time(train_step, args.repeats, dev)
    search_steps = args.repeats + 1
    t = time.perf_counter()
    learn_depth_pruning(
        model, [(x, y)], lambda m, b: diff.loss(m, *b), keep=1, block=2, steps=search_steps
    )
    _sync(dev)
    t_search = (time.perf_counter() - t) / search_steps  # includes the one-off copy and LoRA set-up

    n_params = sum(q.numel() for q in model.parameters())
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(
        f"DiT hidden {args.hidden}, depth {args.depth} -> {args.depth // 2}, "
        f"{(args.input // args.patch) ** 2} tokens, "
        f"{n_params / 1e6:.1f}M params, batch {args.batch}, DDIM {args.steps} steps"
    )
    print("| model | images/s | speed-up |")
    print("|---|---|---|")
    print(f"| original ({args.depth} layers) | {args.batch / t_orig:.1f} | 1.00x |")
    print(
        f"| pruned ({args.depth // 2} layers) | {args.batch / t_pruned:.1f} "
        f"| {t_orig / t_pruned:.2f}x |"
    )
    print(
        f"search step / training step: {t_search / t_train:.2f} "
        f"({t_search * 1e3:.1f} ms vs {t_train * 1e3:.1f} ms)"
    )
    print(
        "reference budget: ~10k search steps (1 ImageNet epoch at batch 128) / 7M DiT-XL/2 "
        "steps = 0.14% of pre-training steps"
    )


if __name__ == "__main__":
    main()
