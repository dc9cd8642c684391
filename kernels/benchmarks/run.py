"""Check and time every registered kernel against its torch reference on a GPU.

Recipe (on a machine with a CUDA GPU, from the repository root):

    uv run python kernels/benchmarks/run.py [--peak-gbs 4800] [--peak-tflops 989]

For each op's BenchCases: build the inputs on the GPU, compare the Triton output with the
torch reference, time both (median of CUDA-synchronised calls after warm-up) and report
the roofline: the least time the op could take, max(bytes / bandwidth, flops / peak).
Defaults are the H200's datasheet figures (4.8 TB/s HBM3e, 989 dense bf16 TFLOP/s).
Prints a markdown table for kernels/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

import torch

import trainforge_kernels
from trainforge_core.bench import median_time


def _as_tuple(out: object) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-gbs", type=float, default=4800.0, help="memory bandwidth, GB/s")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 TFLOP/s")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels/benchmarks/run.py needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(
        f"{datetime.date.today()} · {torch.cuda.get_device_name(0)} · torch {torch.__version__}"
        f" · triton {trainforge_kernels.triton_version()} · python {platform.python_version()}\n"
    )
    print(
        "| op | shape | max abs err | ok | triton ms | torch ms | speed-up | roofline ms "
        "| % of roofline |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for info in trainforge_kernels.kernels().values():
        for case in info.bench_cases() if info.bench_cases else []:
            inputs = case.make(device)
            got = _as_tuple(case.triton_fn(*inputs))
            want = _as_tuple(case.torch_fn(*inputs))
            err = max(
                float((g.float() - w.float()).abs().max()) for g, w in zip(got, want, strict=True)
            )
            ok = all(
                torch.allclose(g.float(), w.float(), atol=case.atol, rtol=case.rtol)
                for g, w in zip(got, want, strict=True)
            )
            failures += not ok
            t_triton = median_time(
                lambda c=case, x=inputs: c.triton_fn(*x), repeats=args.repeats, device=device
            ).median
            t_torch = median_time(
                lambda c=case, x=inputs: c.torch_fn(*x), repeats=args.repeats, device=device
            ).median
            roof = max(
                case.bytes_moved / (args.peak_gbs * 1e9), case.flops / (args.peak_tflops * 1e12)
            )
            print(
                f"| {case.op} | {case.shape} | {err:.2e} | {'yes' if ok else 'NO'} | "
                f"{t_triton * 1e3:.3f} | {t_torch * 1e3:.3f} | {t_torch / t_triton:.2f}x | "
                f"{roof * 1e3:.3f} | {100 * roof / t_triton:.0f}% |"
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
