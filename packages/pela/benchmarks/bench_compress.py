"""PELA compression of a ViT-B-sized timm model: compression time, parameter memory and CPU
inference latency against the original at ratios 1.5, 2 and 3.

Recipe (one process, CPU, random weights from the config: the SVD's cost and the GEMM
shapes do not depend on the weights' values):

    uv run python packages/pela/benchmarks/bench_compress.py [--batch 8] [--rounds 5] [--threads 2]

Goals (issue #24): compressing ViT-B within 30 s; latency at ratio rho at most
1/rho + 15% of the original's. Latency is the median over ``--rounds`` rounds; in each
round every model runs once, in rotating order, so load from other jobs hits all alike.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import timm

    from trainforge_pela import apply_pela

    torch.manual_seed(0)
    original = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    models = {"original": original}
    compress_s, reports = {}, {}
    for ratio in args.ratios:
        student = copy.deepcopy(original)
        start = time.perf_counter()
        reports[ratio] = apply_pela(student, ratio)
        compress_s[ratio] = time.perf_counter() - start
        models[f"ratio {ratio:g}"] = student.eval()

    x = torch.randn(args.batch, 3, 224, 224)
    times: dict[str, list[float]] = {k: [] for k in models}
    names = list(models)
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                start = time.perf_counter()
                models[name](x)
                times[name].append(time.perf_counter() - start)

    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    base_t = statistics.median(times["original"])
    base_p = params(original)
    print(
        f"ViT-B/16 (timm, from config), batch {args.batch}, {args.threads} threads, "
        f"median of {args.rounds} rounds; torch {torch.__version__}"
    )
    print(
        "| model | params (M) | param memory (MB) | compress (s) | latency (ms) | "
        "latency / original | goal 1/ratio + 15% |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| original | {base_p / 1e6:.1f} | {base_p * 4 / 2**20:.0f} | - | "
        f"{1e3 * base_t:.0f} | 1.00 | - |"
    )
    for ratio in args.ratios:
        m = models[f"ratio {ratio:g}"]
        t = statistics.median(times[f"ratio {ratio:g}"])
        p = params(m)
        print(
            f"| ratio {ratio:g} | {p / 1e6:.1f} | {p * 4 / 2**20:.0f} | {compress_s[ratio]:.1f} | "
            f"{1e3 * t:.0f} | {t / base_t:.2f} | {1 / ratio + 0.15:.2f} |"
        )


if __name__ == "__main__":
    main()
