"""Quantization wall time of one layer: trainforge_gptq vs the reference ``fasterquant``.

Recipe (what the README's table comes from):

    # export the reference code somewhere (it is never committed here), e.g.
    mkdir -p /tmp/gptq-ref && for f in gptq.py quant.py; do
        git --git-dir=<mirror of IST-DASLab/gptq> show HEAD:$f > /tmp/gptq-ref/$f; done
    uv run python packages/gptq/benchmarks/bench_quantize.py --reference /tmp/gptq-ref \
        [--sizes 1024 4096] [--repeats 3] [--ref-spread] [--split]

For each size d (a d x d layer) the Hessian comes from 16,384 calibration rows
(X = low-rank(d/8) + 0.1 noise, float32), then both implementations quantize the same
weights with the same Hessian in this process: 4-bit per-channel (asym), g128 (sym) and
g128 + act-order (sym), block size 128, damp 0.01. Reported: median seconds of each, the
ratio, both summed losses and their relative difference. The two agree to float32
rounding, not bit for bit (ours takes the inverse Cholesky factor and the lazy-batch
updates in another order); the summed loss is chaotic at that level (a code on a rounding
tie flips and the row's later compensation changes), so ``--ref-spread`` also runs the
reference single-threaded: its own loss moves about as much with the thread count.
``--split`` prints where our time goes (prepare, cholesky, columns = the per-column loop
with its in-block GEMMs, trailing = the outer-block GEMMs, finish). The reference's CUDA
synchronise call is replaced by a no-op on CPU; its prints are swallowed. Then, on a CUDA
machine only, the fused dequant-matmul against an fp16 matmul at batch 1 and 16 with
achieved bandwidth.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from trainforge_gptq import GPTQ, GPTQConfig, GPTQLinear


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _problem(d: int, n: int = 16384, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, d, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(d, d, generator=g) / d**0.5)
    H = torch.zeros(d, d)
    for _ in range(0, n, 4096):  # the reference's H = 2/n sum x x^T, accumulated in chunks
        X = torch.randn(4096, d // 8, generator=g) @ torch.randn(d // 8, d, generator=g) / 8
        X += 0.1 * torch.randn(4096, d, generator=g)
        H += X.t() @ X
    return lin, H * (2 / n)


class _Split(logging.Handler):
    """Keeps the last time split that ``gptq_quantize`` logs at DEBUG."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage().split(": ", 1)[-1]


def _ours(lin, H, cfg):
    q = GPTQ(lin)
    q.hessian = H
    return q.quantize(cfg).loss


def _reference(mod, lin, H, cfg):
    layer = nn.Linear(lin.in_features, lin.out_features, bias=False)
    layer.weight.data = lin.weight.data.clone()
    g = mod.GPTQ(layer)
    g.H = H.clone()
    g.nsamples = 1
    g.quantizer = mod.Quantizer()
    g.quantizer.configure(cfg.bits, perchannel=True, sym=cfg.sym, mse=False)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        g.fasterquant(
            blocksize=cfg.block_size,
            percdamp=cfg.damp_percent,
            groupsize=cfg.group_size,
            actorder=cfg.desc_act,
        )
    line = [x for x in buf.getvalue().splitlines() if x.startswith("error")][-1]
    return float(line.split()[1])


def gpu_bench() -> None:  # pragma: no cover - CUDA only
    from trainforge_core.bench import median_time

    dev = torch.device("cuda")
    k = n = 4096
    lin = nn.Linear(k, n, bias=False, device=dev, dtype=torch.float16)
    q = GPTQ(lin.float())
    q.hessian = torch.eye(k, device=dev)
    res = q.quantize(GPTQConfig(bits=4, group_size=128))
    ql = GPTQLinear.from_result(lin, res).to(dev)
    w16 = lin.weight.half()
    bw = torch.cuda.get_device_properties(dev)
    print(f"\nGPU {bw.name}: 4-bit g128 {k}x{n}")
    for m in (1, 16):
        x = torch.randn(m, k, device=dev, dtype=torch.float16)
        t_q = median_time(lambda x=x: ql(x), device=dev, repeats=50).median
        t_f = median_time(lambda x=x: x @ w16.t(), device=dev, repeats=50).median
        moved = ql.packed_bytes() + m * (k + n) * 2
        print(
            f"M={m:3d}  gptq_matmul {t_q * 1e6:8.1f} us ({moved / t_q / 1e9:7.1f} GB/s)  "
            f"fp16 matmul {t_f * 1e6:8.1f} us ({(k * n * 2) / t_f / 1e9:7.1f} GB/s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", help="directory with the reference gptq.py and quant.py")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ref-spread",
        action="store_true",
        help="also run the reference with 1 thread: its own float32 loss spread",
    )
    ap.add_argument("--split", action="store_true", help="print our time split per run")
    args = ap.parse_args()
    split = _Split()
    if args.split:
        glog = logging.getLogger("trainforge_gptq.gptq")
        glog.setLevel(logging.DEBUG)
        glog.addHandler(split)
    mod = None
    if args.reference:
        sys.path.insert(0, args.reference)
        with contextlib.redirect_stdout(io.StringIO()):
            import gptq as mod  # type: ignore[import-not-found, no-redef]
        if not torch.cuda.is_available():
            torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, "
        f"load average {Path('/proc/loadavg').read_text().split()[:3]}"
    )
    print(
        "| layer | config | ours (s) | reference (s) | ref / ours | loss ours | loss ref "
        "| rel. diff |" + (" loss ref, 1 thread |" if args.ref_spread else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if args.ref_spread else ""))
    configs = {
        "4-bit per-channel": GPTQConfig(bits=4, group_size=-1, sym=False),
        "4-bit g128": GPTQConfig(bits=4, group_size=128),
        "4-bit g128 act-order": GPTQConfig(bits=4, group_size=128, desc_act=True),
    }
    for d in args.sizes:
        lin, H = _problem(d)
        for name, cfg in configs.items():
            t_ours, loss = _median_time(lambda c=cfg, lin=lin, H=H: _ours(lin, H, c), args.repeats)
            if mod is not None:
                t_ref, loss_ref = _median_time(
                    lambda c=cfg, lin=lin, H=H: _reference(mod, lin, H, c), args.repeats
                )
                extra = ""
                if args.ref_spread:
                    threads = torch.get_num_threads()
                    torch.set_num_threads(1)
                    extra = f" {_reference(mod, lin, H, cfg):.6g} |"
                    torch.set_num_threads(threads)
                print(
                    f"| {d}x{d} | {name} | {t_ours:.2f} | {t_ref:.2f} | "
                    f"{t_ref / t_ours:.2f} | {loss:.6g} | {loss_ref:.6g} | "
                    f"{(loss - loss_ref) / loss_ref:+.1e} |" + extra
                )
            else:
                print(f"| {d}x{d} | {name} | {t_ours:.2f} | - | - | {loss:.6g} | - | - |")
            if args.split:
                print(f"|  split {d}x{d} {name} | {split.last} | | | | | | |")
        fp32 = d * d * 4
        res_bytes = d * d // 2 + (d // 128) * d * 2 + (d // 128) * d // 2 + d * 4
        print(
            f"|  memory {d}x{d} | fp32 {fp32} B, fp16 {fp32 // 2} B, 4-bit g128 packed "
            f"{res_bytes} B ({fp32 / res_bytes:.1f}x smaller than fp32) | | | | | | |"
        )
    if torch.cuda.is_available():
        gpu_bench()


if __name__ == "__main__":
    main()
