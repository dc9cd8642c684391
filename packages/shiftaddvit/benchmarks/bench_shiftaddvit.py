"""CPU latency of ShiftAddViT's pieces against the originals, paired in one process.

Recipe (from the repository root; one CPU thread unless --threads):

    OMP_NUM_THREADS=1 uv run python packages/shiftaddvit/benchmarks/bench_shiftaddvit.py

Measures, each pair timed alternately (A, B, B, A, ...) and reported as medians, their ratio,
and the median (with quartiles) of the per-pair ratios:

1. attention at PVT stage-1 size (3,136 tokens = 56 x 56, 64 channels, batch 1, 1 head): the
   binary linear-angular attention module (to_qk, to_v, KSH codes, c(c^T v), norm, 9x1 token
   conv, proj) against softmax attention over all tokens (timm ``Attention``, fused SDPA) and
   against PVTv2's spatial-reduction attention (``sr_ratio=8``, keys/values on 49 tokens);
   also at 4x the tokens, to show the scaling (112 x 112);
2. the whole ``pvt_v2_b0`` (224 x 224, batch 1, eval) against its reparameterised versions:
   attention only, all linears shift (``linears="shift"``) and the MoE model
   (``linears="moe"``);
3. one ShiftLinear (3,136 x 64 -> 512) with its cached decoded weight against rebuilding the
   weight on every call, and against ``nn.Linear``;
4. one Mult./Shift MoE layer (eval, a fresh router: about half the tokens per expert) against
   ``nn.Linear`` at the stage-1 MLP sizes of pvt_v2_b0 (3,136 tokens, 32 -> 256 and 256 -> 32,
   the second with the transposed input timm's PVTv2 MLP hands it), and the pieces of the
   MoE: router GEMM, sort, input gather, expert GEMMs, output gather.

Times are process CPU time by default (``--clock process``: one thread, so the work of this
process, not the time it waited for a core on a loaded machine); ``--clock wall`` gives
``perf_counter``. ``--only model`` runs section 2 alone (the README's whole-model rows,
about 2 min idle with ``--repeats 21``).

KSH codes are fitted with 10 SGD steps per bit (the fit quality does not change the cost).
Nothing is asserted; the printed table goes in the package README.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
from torch import nn

_RATIOS: list[float] = []  # per-pair ratios of the last paired() call
_CLOCK = [time.process_time]  # set by --clock


def paired(a, b, repeats: int) -> tuple[float, float]:
    """Medians (s) of ``a()`` and ``b()`` timed alternately after one warm-up each; the
    per-pair ratios ``t_a / t_b`` are kept for :func:`row` (robust to load drifting)."""
    a(), b()
    ta, tb = [], []
    for i in range(repeats):
        order = ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta))
        for fn, times in order:
            clock = _CLOCK[0]
            start = clock()
            fn()
            times.append(clock() - start)
    _RATIOS[:] = sorted(x / y for x, y in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb)


def row(name: str, base: str, t_base: float, t_new: float) -> None:
    r = _RATIOS
    q1, q3 = r[len(r) // 4], r[(3 * len(r)) // 4]
    print(
        f"| {name} | {base} | {t_base * 1e3:.2f} | {t_new * 1e3:.2f} | {t_base / t_new:.2f}x | "
        f"{statistics.median(r):.2f}x ({q1:.2f}-{q3:.2f}) |"
    )


@torch.no_grad()
def bench_attention(repeats: int) -> None:
    import timm.layers
    from timm.models.pvt_v2 import Attention as PvtAttention

    from trainforge_shiftaddvit import AddLinearAttention, BinaryCoder

    for side in (56, 112):
        n, dim = side * side, 64
        torch.manual_seed(0)
        x = torch.randn(1, n, dim)
        add = AddLinearAttention(dim, 1, qkv_bias=True, coder=BinaryCoder(1, dim, iters=10))
        add.train()
        add(x[:, :3136])  # fit the KSH codes
        add.eval()
        softmax = timm.layers.Attention(dim, num_heads=1, qkv_bias=True).eval()
        sra = PvtAttention(dim, num_heads=1, sr_ratio=8, qkv_bias=True).eval()
        t_soft, t_add = paired(lambda m=softmax, x=x: m(x), lambda m=add, x=x: m(x), repeats)
        row(f"attention, {n} tokens x {dim}", "softmax (all tokens)", t_soft, t_add)
        t_sra, t_add2 = paired(
            lambda m=sra, x=x, s=side: m(x, [s, s]), lambda m=add, x=x: m(x), repeats
        )
        row(f"attention, {n} tokens x {dim}", "PVTv2 SRA (sr 8)", t_sra, t_add2)


@torch.no_grad()
def bench_model(repeats: int) -> None:
    import timm

    from trainforge_shiftaddvit import ShiftAddConfig, reparameterize_vit

    torch.manual_seed(0)
    base = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    fitted = None
    for linears in ("none", "shift", "moe"):
        model = copy.deepcopy(base)
        reparameterize_vit(model, ShiftAddConfig(linears=linears, ksh_iters=10))
        if fitted is None:
            model.train()
            model(x)  # fit the KSH codes once
            fitted = {k: v for k, v in model.state_dict().items() if ".coder." in k}
        else:
            model.load_state_dict(fitted, strict=False)
        model.eval()
        t_base, t_new = paired(lambda: base(x), lambda m=model: m(x), repeats)
        row("pvt_v2_b0, 224x224, batch 1", f"original vs linears={linears}", t_base, t_new)


@torch.no_grad()
def bench_shift_linear(repeats: int) -> None:
    from trainforge_shiftaddvit import ShiftLinear

    torch.manual_seed(0)
    lin = nn.Linear(64, 512)
    layer = ShiftLinear.from_linear(lin)
    x = torch.randn(3136, 64)

    def rebuild():
        layer._cache = None
        return layer(x)

    t_rebuild, t_cached = paired(rebuild, lambda: layer(x), repeats)
    row("ShiftLinear 3136x64->512", "decode weight every call", t_rebuild, t_cached)
    t_lin, t_cached = paired(lambda: lin(x), lambda: layer(x), repeats)
    row("ShiftLinear 3136x64->512", "nn.Linear", t_lin, t_cached)


@torch.no_grad()
def bench_moe_layer(repeats: int) -> None:
    torch.manual_seed(0)
    _moe_case(32, 256, False, repeats)
    _moe_case(256, 32, True, repeats)


def _moe_case(d_in: int, d_out: int, transposed: bool, repeats: int) -> None:
    from trainforge_shiftaddvit import MultShiftMoE

    lin = nn.Linear(d_in, d_out)
    moe = MultShiftMoE(lin).eval()
    x = torch.randn(1, d_in, 3136).transpose(1, 2) if transposed else torch.randn(1, 3136, d_in)
    t_lin, t_moe = paired(lambda: lin(x), lambda: moe(x), repeats)
    shape = f"MoE 3136 x {d_in} -> {d_out}" + (" (transposed input)" if transposed else "")
    row(shape, f"nn.Linear (Shift share {float(moe.last_shares[1]):.2f})", t_lin, t_moe)
    # the pieces of the MoE's eval forward, each timed alone (medians, microseconds)
    flat = x.reshape(-1, d_in)
    column_major = flat.t().is_contiguous()  # the MoE gathers such inputs along tokens

    def router():
        if column_major:
            return (moe.w_gate.t() @ flat.t()).t()
        return flat @ moe.w_gate

    logits = router()
    idx = (logits[:, 1] > logits[:, 0]).long()
    order = torch.argsort(idx, stable=True)
    n_mult = int((idx == 0).sum())

    def gather_in():  # as the MoE does it: per expert for column-major inputs
        if column_major:
            t = flat.t()
            return t.index_select(1, order[:n_mult]).t(), t.index_select(1, order[n_mult:]).t()
        xs = flat.index_select(0, order)
        return xs[:n_mult], xs[n_mult:]

    xs_mult, xs_shift = gather_in()
    ys = torch.empty(len(idx), d_out)
    mult, shift = moe.experts
    xi, w, b = shift.gemm_operands(xs_shift)
    pieces = {
        "input reshape": lambda: x.reshape(-1, d_in),
        "router GEMM": router,
        "sort": lambda: torch.argsort(idx, stable=True),
        "input gather": gather_in,
        "Mult. GEMM": lambda: torch.addmm(mult.bias, xs_mult, mult.weight.t(), out=ys[:n_mult]),
        "Shift rounding": lambda: shift.gemm_operands(xs_shift),
        "Shift GEMM": lambda: torch.addmm(b, xi, w.t(), out=ys[n_mult:]),
        "output gather": lambda: ys.index_select(0, order),
    }
    times = {}
    for name, fn in pieces.items():
        fn()
        samples = []
        for _ in range(repeats):
            start = _CLOCK[0]()
            fn()
            samples.append(_CLOCK[0]() - start)
        times[name] = statistics.median(samples) * 1e6
    print(
        f"|   pieces (us) | {t_lin * 1e6:.0f} for nn.Linear | "
        + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
        + " | | | |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--only", choices=("attention", "shift", "moe", "model"), default=None)
    parser.add_argument("--clock", choices=("process", "wall"), default="process")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _CLOCK[0] = time.process_time if args.clock == "process" else time.perf_counter
    print(
        f"{time.strftime('%Y-%m-%d')} · {platform.processor() or platform.machine()} · "
        f"torch {torch.__version__} · {args.threads} thread(s) · median of {args.repeats} · "
        f"{args.clock} clock · load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| what | baseline | baseline ms | ShiftAddViT ms | speed-up (medians) "
        "| paired ratio, median (IQR) |"
    )
    print("|---|---|---|---|---|---|")
    sections = {
        "attention": bench_attention,
        "shift": bench_shift_linear,
        "moe": bench_moe_layer,
        "model": bench_model,
    }
    for name, fn in sections.items():
        if args.only in (None, name) and not (name == "model" and args.skip_model):
            fn(args.repeats)


if __name__ == "__main__":
    main()
