"""Sampling throughput of a half-depth pruned DiT against the original, and the search cost.

Recipe (from the repository root; about 4 min on an idle 2-core machine):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/bench_tinyfusion.py

    # DiT-XL/2 shape on a GPU
    uv run python packages/tinyfusion/benchmarks/bench_tinyfusion.py --device cuda \
        --hidden 1152 --depth 28 --heads 16 --input 32 --patch 2 --batch 64,256

What it measures (random weights: speed does not depend on them):

1. DDIM sampling throughput (images/s) of TinyDiT(depth=D) and of the model pruned 1:2 to D/2
   layers with ``prune_layers`` (the export of ``learn_depth_pruning``), for each batch size in
   ``--batch``. Both models live in one process and are timed in pairs, the order alternating
   (original first on even rounds, pruned first on odd ones), under ``torch.inference_mode``.
   The speed-up is the median over rounds of the per-pair time ratio; its min-max is printed.
   The goal is >= 1.9x at half depth (ideal 2x).
2. Where the time goes in one DDIM step of the original: the embedders (patchify + position,
   timestep and label), the block stack, the final layer (+ unpatchify), and the DDIM update
   (the sampler's own arithmetic, timed with a stand-in model). Only the blocks shrink with
   pruning, so the expected speed-up is ``step / (step - blocks / 2)``: at small batches the fixed
   per-op cost of the embedders, the final layer and the DDIM loop caps it below 2x; once the
   batch is large enough for the blocks to dominate, it approaches 2x.
3. The cost of one search step (gates + LoRA, per-sample masks: every block still runs)
   relative to one plain training step of the original, and the search budget as a fraction of
   the pre-training steps: the reference searches for 1 epoch of ImageNet at batch 128 (~10k
   steps) on a DiT-XL/2 pre-trained for 7M steps.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from trainforge_tinyfusion import GaussianDiffusion, TinyDiT, learn_depth_pruning, prune_layers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


_CLOCK = time.perf_counter  # --clock process: CPU time of this process (see main)


def _once(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    t = _CLOCK()
    fn()
    _sync(device)
    return _CLOCK() - t


def _time(fn: Callable[[], object], repeats: int, device: str) -> float:
    fn()  # warm-up
    return statistics.median(_once(fn, device) for _ in range(repeats))


def _fastest(fn: Callable[[], object], repeats: int, device: str) -> float:
    """The fastest of ``repeats`` runs: on a shared machine the least disturbed one."""
    fn()  # warm-up
    return min(_once(fn, device) for _ in range(repeats))


def _paired(
    fa: Callable[[], object], fb: Callable[[], object], rounds: int, device: str
) -> tuple[list[float], list[float]]:
    """Times of ``fa`` and ``fb`` in ``rounds`` pairs, the order alternating."""
    fa(), fb()  # warm-up
    ta, tb = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ta.append(_once(fa, device))
            tb.append(_once(fb, device))
        else:
            tb.append(_once(fb, device))
            ta.append(_once(fa, device))
    return ta, tb


@torch.inference_mode()
def _breakdown(
    model: TinyDiT, diff: GaussianDiffusion, shape: tuple[int, ...], y: torch.Tensor, args
) -> dict[str, float]:
    """Seconds per DDIM step (fastest of several runs) spent in each part of ``model``'s forward
    (``TinyDiT.forward`` replayed piece by piece) and in the sampler's own update."""
    dev = args.device
    x = torch.randn(shape, device=dev)
    t = torch.full((shape[0],), 500, device=dev, dtype=torch.long)
    state: dict[str, torch.Tensor] = {}

    def embed():
        state["h"] = model.x_embedder(x).flatten(2).transpose(1, 2) + model.pos_embed
        state["c"] = model.t_embedder(t) + model.y_embedder(y)

    def blocks():
        h = state["h"]
        for blk in model.blocks:
            h = blk(h, state["c"])
        state["hb"] = h

    def final():
        model.unpatchify(model.final_layer(state["hb"], state["c"]))

    embed(), blocks()
    n = args.repeats * 3
    eps = torch.zeros(shape, device=dev)
    parts = {
        "embedders": _fastest(embed, n, dev),
        "blocks": _fastest(blocks, n, dev),
        "final layer": _fastest(final, n, dev),
        # the sampler alone: DDIM with a stand-in model that returns a constant noise estimate
        "DDIM update": _fastest(lambda: diff.ddim_sample(lambda *_: eps, shape, y, 50), n, dev)
        / 50,
    }
    parts["sum"] = sum(parts.values())
    step = _fastest(lambda: diff.ddim_sample(model, shape, y, args.steps), args.repeats, dev)
    parts["step"] = step / args.steps
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--input", type=int, default=16)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--batch", default="4,32", help="comma-separated sampling batch sizes")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps per sample")
    p.add_argument("--repeats", type=int, default=6, help="timed pairs per batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--search-batch", type=int, default=32)
    p.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall time (default; for an idle machine or a GPU) or this process's CPU time "
        "(CPU with --threads 1 on a shared machine: time spent descheduled is not counted)",
    )
    args = p.parse_args()
    if args.clock == "process":
        if args.device != "cpu" or args.threads != 1:
            p.error("--clock process needs --device cpu --threads 1")
        global _CLOCK
        _CLOCK = time.process_time
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
    n_params = sum(q.numel() for q in model.parameters())
    print(
        f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{args.clock} clock"
    )
    print(
        f"DiT hidden {args.hidden}, depth {args.depth} -> {args.depth // 2}, "
        f"{(args.input // args.patch) ** 2} tokens, {n_params / 1e6:.1f}M params, "
        f"DDIM {args.steps} steps, {args.repeats} alternated pairs per batch"
    )
    print()
    print(
        "| batch | original images/s | pruned images/s | speed-up (median, min-max) "
        "| blocks share of a step | expected |"
    )
    print("|---|---|---|---|---|---|")
    breakdowns = {}
    for b in (int(v) for v in args.batch.split(",")):
        y = torch.randint(0, 1000, (b,), device=dev)
        shape = (b, 4, args.input, args.input)

        def sample(m, shape=shape, y=y):
            def run():
                with torch.inference_mode():
                    diff.ddim_sample(m, shape, y, args.steps)

            return run

        t_orig, t_pruned = _paired(sample(model), sample(pruned), args.repeats, dev)
        ratios = sorted(a / c for a, c in zip(t_orig, t_pruned, strict=True))
        parts = _breakdown(model, diff, shape, y, args)
        breakdowns[b] = parts
        share = parts["blocks"] / parts["sum"]
        print(
            f"| {b} | {b / statistics.median(t_orig):.1f} | {b / statistics.median(t_pruned):.1f} "
            f"| {statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) "
            f"| {share:.1%} | {1 / (1 - share / 2):.2f}x |"
        )
    print()
    print(
        "Milliseconds per DDIM step of the original, fastest of several runs (the forward replayed "
        "piece by piece; sum = the parts, step = a whole DDIM step):"
    )
    names = ["embedders", "blocks", "final layer", "DDIM update", "sum", "step"]
    print("| batch | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for b, parts in breakdowns.items():
        print(f"| {b} | " + " | ".join(f"{parts[n] * 1e3:.2f}" for n in names) + " |")

    sb = args.search_batch
    x = torch.randn((sb, 4, args.input, args.input), device=dev)
    y = torch.randint(0, 1000, (sb,), device=dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        loss = diff.loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_train = _time(train_step, args.repeats, dev)
    search_steps = args.repeats + 1
    t = _CLOCK()
    learn_depth_pruning(
        model, [(x, y)], lambda m, b: diff.loss(m, *b), keep=1, block=2, steps=search_steps
    )
    _sync(dev)
    t_search = (_CLOCK() - t) / search_steps  # includes the one-off copy and LoRA set-up
    print()
    print(
        f"search step / training step (batch {sb}): {t_search / t_train:.2f} "
        f"({t_search * 1e3:.1f} ms vs {t_train * 1e3:.1f} ms)"
    )
    print(
        "reference budget: ~10k search steps (1 ImageNet epoch at batch 128) / 7M DiT-XL/2 "
        "steps = 0.14% of pre-training steps"
    )


if __name__ == "__main__":
    main()
