"""Where the whole-model time goes: pvt_v2_b0 against its reparameterised version on CPU.

Recipe (from the repository root; one CPU thread, about 1 min per configuration):

    OMP_NUM_THREADS=1 uv run python packages/shiftaddvit/benchmarks/bench_profile_model.py \
        --linears none

Two views, both with the models run alternately (A, B, B, A, ...) in one process:

1. per module, in context: forward hooks on every block's ``attn``, ``mlp``, ``norm1`` and
   ``norm2`` take the process CPU time of each call during whole-model forwards (so caches
   hold what the model leaves there, unlike a module timed alone); medians in microseconds;
2. per op: ``torch.profiler`` self CPU time of each aten op per forward (medians over
   alternated profiled rounds), the largest differences first. The fused C loops
   (``trainforge_kernels.add_attention_cpu``, ``fixed_point_floor_cpu``) are ctypes calls,
   not aten ops, so their time shows in view 1 but not here.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def _models(linears: str):
    import timm

    from trainforge_shiftaddvit import ShiftAddConfig, reparameterize_vit

    torch.manual_seed(0)
    base = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    model = copy.deepcopy(base)
    reparameterize_vit(model, ShiftAddConfig(linears=linears, ksh_iters=10))
    model.train()
    model(x)  # fit the KSH codes
    return base, model.eval(), x


@torch.no_grad()
def per_module(base, model, x, repeats: int) -> None:
    times: dict[tuple[str, str], list[float]] = {}
    handles = []
    for tag, net in (("original", base), ("ShiftAddViT", model)):
        for name, mod in net.named_modules():
            if name.endswith((".attn", ".mlp", ".norm1", ".norm2")) or name == "":

                def pre(m, args):
                    m._bench_t0 = time.process_time()

                def post(m, args, out, key=(tag, name or "<whole model>")):
                    times.setdefault(key, []).append(time.process_time() - m._bench_t0)

                handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    for _ in range(3):
        base(x), model(x)
    times.clear()
    for i in range(repeats):
        order = (base, model) if i % 2 == 0 else (model, base)
        for net in order:
            net(x)
    for h in handles:
        h.remove()
    names = sorted(
        {n for t, n in times if ("original", n) in times and ("ShiftAddViT", n) in times}
    )
    print("| module | original us | ShiftAddViT us | difference |")
    print("|---|---|---|---|")
    for n in names:
        a = statistics.median(times[("original", n)]) * 1e6
        b = statistics.median(times[("ShiftAddViT", n)]) * 1e6
        print(f"| {n} | {a:.0f} | {b:.0f} | {b - a:+.0f} |")


@torch.no_grad()
def per_op(base, model, x, rounds: int, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    res: dict[str, dict[str, list[tuple[float, float]]]] = {"original": {}, "ShiftAddViT": {}}
    for r in range(rounds):
        pairs = (("original", base), ("ShiftAddViT", model))
        for tag, net in pairs if r % 2 == 0 else pairs[::-1]:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    net(x)
            for e in prof.key_averages():
                res[tag].setdefault(e.key, []).append((e.self_cpu_time_total / 5, e.count / 5))

    def med(tag: str, key: str) -> tuple[float, float]:
        v = res[tag].get(key)
        if not v:
            return 0.0, 0.0
        return statistics.median(a for a, _ in v), v[0][1]

    keys = set(res["original"]) | set(res["ShiftAddViT"])
    keys = sorted(keys, key=lambda k: -abs(med("ShiftAddViT", k)[0] - med("original", k)[0]))
    print("\n| aten op | original us (calls) | ShiftAddViT us (calls) | difference |")
    print("|---|---|---|---|")
    for k in keys[:top]:
        (a, na), (b, nb) = med("original", k), med("ShiftAddViT", k)
        print(f"| {k} | {a:.0f} ({na:.0f}) | {b:.0f} ({nb:.0f}) | {b - a:+.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linears", choices=("none", "shift", "moe"), default="none")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base, model, x = _models(args.linears)
    print(f"pvt_v2_b0 vs linears={args.linears!r}, one thread, process CPU time\n")
    per_module(base, model, x, args.repeats)
    per_op(base, model, x, args.rounds, args.top)


if __name__ == "__main__":
    main()
