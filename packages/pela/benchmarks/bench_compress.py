"""PELA compression of a ViT-B-sized timm model: compression time, parameter memory and CPU
inference latency against the original at ratios 1.5, 2 and 3, with the reference's rank
rule (with and without the inference-time padding of the first factor, ``inference_pad``,
default 16) and with ranks rounded down to a multiple (``rank_multiple``, opt-in).

Recipe (one process, CPU, random weights from the config: the SVD's cost and the GEMM
shapes do not depend on the weights' values):

    uv run python packages/pela/benchmarks/bench_compress.py [--batch 8] [--rounds 5] \
        [--threads 2] [--rank-multiples 1 16] [--inference-pads 1 16] [--clock wall|cpu] \
        [--breakdown]

Each (rank multiple, inference pad) pair is a row, except pads that change no rank (every
rank already a multiple); the padded and unpadded rows share one compression (a copy of the
compressed model with the other ``inference_pad``).

Goals (issue #24): compressing ViT-B within 30 s; latency at ratio rho at most
1/rho + 15% of the original's. Latency is the median over ``--rounds`` rounds; in each
round every model runs once, in rotating order (reversed every other round), so load from
other jobs hits all alike; the table also gives the median of the per-round ratios.
``--clock cpu`` times process CPU time instead of wall time (with ``--threads 1`` on a
loaded machine this leaves out the time the process waited for a core).
``--breakdown`` also times each block Linear's GEMMs alone (original ``addmm`` vs the
low-rank layer's forward on the same token count, padded or not as in its row), paired,
and prints what fraction of the original's latency the Linears take: the rest (attention,
norms, GELU, adds, patch embedding) does not shrink. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _rounds(
    fns: dict[str, Callable[[], object]], rounds: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for f in fns.values():
        f()  # warm-up
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        if r % 2:
            order.reverse()
        for name in order:
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
    return times


def _paired(times: dict[str, list[float]], name: str, base: str) -> float:
    return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))


def _breakdown(
    original: torch.nn.Module,
    student: torch.nn.Module,
    tokens: int,
    rounds: int,
    clock: Callable[[], float],
) -> tuple[float, float]:
    from trainforge_pela import LowRankLinear

    base_block = original.blocks[0]
    block = student.blocks[0]
    fns: dict[str, Callable[[], object]] = {}
    flops: dict[str, tuple[int, int]] = {}
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        lin = base_block.get_submodule(name)
        low = block.get_submodule(name)
        assert isinstance(low, LowRankLinear), name
        x = torch.randn(tokens, lin.in_features)
        fns[f"{name} original"] = lambda x=x, lin=lin: F.linear(x, lin.weight, lin.bias)
        fns[f"{name} low-rank"] = lambda x=x, low=low: low(x)
        m, n = lin.out_features, lin.in_features
        flops[name] = (m * n, low.rank * (m + n))
    with torch.inference_mode():
        times = _rounds(fns, rounds, clock)
    print(f"\nBlock Linears alone ({tokens} tokens, median of {rounds} paired rounds):")
    print(
        "| layer | shape (out x in) | rank | original (ms) | low-rank (ms) | time ratio "
        "| FLOP ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    tot_o = tot_l = 0.0
    for name, (full, low) in flops.items():
        lin, low_m = base_block.get_submodule(name), block.get_submodule(name)
        to = statistics.median(times[f"{name} original"])
        tl = statistics.median(times[f"{name} low-rank"])
        tot_o, tot_l = tot_o + to, tot_l + tl
        print(
            f"| {name} | {lin.out_features}x{lin.in_features} | {low_m.rank} | {1e3 * to:.1f} | "
            f"{1e3 * tl:.1f} | {_paired(times, f'{name} low-rank', f'{name} original'):.3f} | "
            f"{low / full:.3f} |"
        )
    print(f"| all four | | | {1e3 * tot_o:.1f} | {1e3 * tot_l:.1f} | {tot_l / tot_o:.3f} | |")
    return tot_o, tot_l


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    parser.add_argument("--rank-multiples", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--inference-pads", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    import timm

    from trainforge_pela import apply_pela, set_inference_pad

    torch.manual_seed(0)
    original = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    models: dict[str, torch.nn.Module] = {"original": original}
    compress_s, reports = {}, {}
    for ratio in args.ratios:
        for k in args.rank_multiples:
            base_key = f"ratio {ratio:g}" + (f", rank_multiple {k}" if k > 1 else "")
            student = copy.deepcopy(original)
            start = time.perf_counter()
            report = apply_pela(student, ratio, rank_multiple=k)
            seconds = time.perf_counter() - start
            for pad in args.inference_pads:
                if pad > 1 and all(c.rank % pad == 0 for c in report.layers):
                    continue  # padding changes nothing here
                key = base_key + (f", inference_pad {pad}" if pad > 1 else "")
                variant = copy.deepcopy(student)
                set_inference_pad(variant, pad)
                reports[key], compress_s[key], models[key] = report, seconds, variant.eval()

    x = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        times = _rounds({k: (lambda m=m: m(x)) for k, m in models.items()}, args.rounds, clock)

    def params(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    from trainforge_pela import low_rank_layers

    def pad_cache_mb(m: torch.nn.Module) -> float:
        """Memory of the zero-padded first-factor copies the padded path holds."""
        caches = [layer._pad_cache for layer in low_rank_layers(m).values()]
        return sum(c[1].numel() * c[1].element_size() for c in caches if c) / 2**20

    base_t = statistics.median(times["original"])
    base_p = params(original)
    print(
        f"ViT-B/16 (timm, from config), batch {args.batch}, {args.threads} threads, "
        f"{args.clock} clock, median of {args.rounds} rounds; torch {torch.__version__}"
    )
    print(
        "| model | ranks (qkv, proj, fc1, fc2) | params (M) | param memory (MB) "
        "| + padded copies (MB) | compress (s) | latency (ms) | latency / original (paired) "
        "| goal 1/ratio + 15% |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| original | full | {base_p / 1e6:.1f} | {base_p * 4 / 2**20:.0f} | - | - | "
        f"{1e3 * base_t:.0f} | 1.00 | - |"
    )
    for key, rep in reports.items():
        m = models[key]
        t = statistics.median(times[key])
        p = params(m)
        ranks = ", ".join(str(c.rank) for c in rep.layers[:4])
        print(
            f"| {key} | {ranks} | {p / 1e6:.1f} | {p * 4 / 2**20:.0f} | {pad_cache_mb(m):.0f} | "
            f"{compress_s[key]:.1f} | "
            f"{1e3 * t:.0f} | {t / base_t:.3f} ({_paired(times, key, 'original'):.3f}) | "
            f"{1 / rep.ratio + 0.15:.3f} |"
        )

    if args.breakdown:
        tokens = args.batch * (original.patch_embed.num_patches + original.num_prefix_tokens)
        depth = len(original.blocks)
        for key in reports:
            print(f"\n### {key}")
            tot_o, tot_l = _breakdown(original, models[key], tokens, args.rounds, clock)
            lin = depth * tot_o / base_t
            print(
                f"Block Linears: {lin:.2f} of the original's latency; the rest "
                f"{1 - lin:.2f}. Floor with these GEMM times: "
                f"{1 - lin + lin * tot_l / tot_o:.3f} of the original."
            )


if __name__ == "__main__":
    main()
