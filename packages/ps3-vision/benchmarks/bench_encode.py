"""Encode latency and peak memory: PS3 at budgets of 5/10/25% vs the same ViT at full res.

Recipe (one process; every arm runs the same timm ViT weights):

    python packages/ps3-vision/benchmarks/bench_encode.py --device cuda --sizes 1536 3072
    python packages/ps3-vision/benchmarks/bench_encode.py --device cpu --sizes 1536 \
        --vit 384 12 6 --warmup 0 --repeats 1      # ViT-S/16 layout, what the README reports

Trunk: a timm ViT-B/16 layout by default (width 768, depth 12, 12 heads; ``--vit`` sets
width, depth, heads), MAP pooling, no prefix tokens, random weights (speed does not depend
on them). PS3 scales are (S/4, S/2, S) for an S x S image, so the low-res view is
(S/64)^2 tokens; the budget is a share of the (S/32)^2 + (S/16)^2 high-res patches,
max_select = 2560 tokens per look (the paper's), the
high-res cue on. "full high-res" is the plain timm forward of the same ViT on the S x S
image ((S/16)^2 tokens, dynamic_img_size). Latency: median of ``--repeats`` calls after
warm-up (CUDA synchronised); peak memory: trainforge_core.bench.peak_memory (CUDA
allocator peak above the starting level; CPU resident-set high-water mark). bf16 autocast
on CUDA, fp32 on CPU. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib

import timm
import torch

from trainforge_core.bench import median_time, peak_memory
from trainforge_ps3_vision import PS3Config, apply_ps3


def build(size: int, device: str, width: int = 768, depth: int = 12, heads: int = 12):
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        num_classes=0,
        class_token=False,
        global_pool="map",
        img_size=size // 4,
        dynamic_img_size=True,
    )
    enc = apply_ps3(vit, PS3Config(scales=(size // 4, size // 2, size))).to(device).eval()
    return enc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1536])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.05, 0.10, 0.25])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--vit", type=int, nargs=3, default=[768, 12, 12], help="width depth heads")
    args = ap.parse_args()
    dev = args.device
    cast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
        if dev.startswith("cuda")
        else contextlib.nullcontext
    )
    print(f"device {dev}, torch {torch.__version__}, timm {timm.__version__}, ViT {args.vit}")
    if dev.startswith("cuda"):
        print(torch.cuda.get_device_name(dev))
    print("| image | arm | tokens | latency (ms) | peak memory (MiB) | speed-up | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        bench_size(size, dev, cast, args)
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()


def bench_size(size: int, dev: str, cast, args: argparse.Namespace) -> None:
    enc = build(size, dev, *args.vit)
    x = torch.randn(1, 3, size, size, device=dev)
    available = (size // 32) ** 2 + (size // 16) ** 2
    low = (size // 64) ** 2

    def full() -> None:
        with torch.no_grad(), cast():
            enc.trunk.forward_features(x)

    arms = [("full high-res", (size // 16) ** 2, full)]
    for b in args.budgets:
        n = max(1, round(b * available))

        def ps3(n: int = n) -> None:
            with torch.no_grad(), cast():
                enc.encode(x, budget=n)

        arms.append((f"PS3 {100 * b:g}% ({n} high-res)", low + n, ps3))
    base_t = base_m = None
    for name, tokens, fn in arms:
        try:
            t = median_time(fn, warmup=args.warmup, repeats=args.repeats, device=dev).median
            m = peak_memory(fn, dev)
        except torch.OutOfMemoryError:
            print(f"| {size} | {name} | {tokens} | OOM | OOM | - | - |")
            continue
        if base_t is None:
            base_t, base_m = t, m
        ratio = f"{m / base_m:.3f}" if base_m else "-"
        print(
            f"| {size} | {name} | {tokens} | {1000 * t:.1f} | {m / 2**20:.0f} | "
            f"{base_t / t:.2f}x | {ratio} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
