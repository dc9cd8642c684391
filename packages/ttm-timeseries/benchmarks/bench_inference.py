"""CPU inference of the TTM 512-96 preset, ours vs granite-tsfm on the same weights.

Recipe (granite-tsfm pins an older torch, so it lives in a throwaway venv outside the repo
that reuses the workspace's torch/transformers through a .pth file):

    uv venv /tmp/tsfm-venv --python 3.11
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > /tmp/tsfm-venv/lib/python3.11/site-packages/_workspace.pth
    VIRTUAL_ENV=/tmp/tsfm-venv uv pip install --no-deps granite-tsfm==0.3.11 datasets pyarrow \
        dill multiprocess xxhash deprecated wrapt einops scikit-learn joblib threadpoolctl \
        cloudpickle narwhals
    /tmp/tsfm-venv/bin/python packages/ttm-timeseries/benchmarks/bench_inference.py

Without granite-tsfm (``uv run python packages/ttm-timeseries/benchmarks/bench_inference.py``)
only our model is timed. Timings are medians of interleaved repeats (ours, reference, ours, ...)
so that load from other processes hits both alike. Eval mode, ``torch.inference_mode``.
``--threads N`` sets torch's intra-op threads (default: torch's own choice); on a machine
shared with other jobs ``--threads 1`` avoids the threads waiting on each other, which
otherwise dominates both timings.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction, load_tsfm_state_dict


def _reference(cfg: TTMConfig):
    try:
        from tsfm_public.models.tinytimemixer import (
            TinyTimeMixerConfig,
            TinyTimeMixerForPrediction,
        )
    except ImportError:
        return None
    ref_cfg = TinyTimeMixerConfig(
        **{k: v for k, v in cfg.to_dict().items() if k in TinyTimeMixerConfig().to_dict()}
    )
    return TinyTimeMixerForPrediction(ref_cfg).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = TTMConfig.r1_512_96(num_input_channels=args.channels)
    ours = TTMForPrediction(cfg).eval()
    ref = _reference(cfg)
    if ref is not None:
        load_tsfm_state_dict(ours, ref.state_dict())
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"params {sum(p.numel() for p in ours.parameters()):,}"
    )
    print("| batch | ours samples/s | granite-tsfm samples/s | speed-up | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for batch in (64, 1):
        x = torch.randn(batch, 512, args.channels) * 3 + 1
        models = {"ours": ours} if ref is None else {"ours": ours, "ref": ref}
        times: dict[str, list[float]] = {k: [] for k in models}
        with torch.inference_mode():
            outs = {k: m(x).prediction_outputs for k, m in models.items()}  # warm-up
            reps = args.repeats if batch > 1 else args.repeats * 10
            for _ in range(reps):
                for k, m in models.items():
                    t0 = time.perf_counter()
                    m(x)
                    times[k].append(time.perf_counter() - t0)
        rate = {k: batch / statistics.median(v) for k, v in times.items()}
        if ref is None:
            print(f"| {batch} | {rate['ours']:.1f} | - | - | - |")
        else:
            diff = float((outs["ours"] - outs["ref"]).abs().max())
            print(
                f"| {batch} | {rate['ours']:.1f} | {rate['ref']:.1f} | "
                f"{rate['ours'] / rate['ref']:.2f}x | {diff:.1e} |"
            )


if __name__ == "__main__":
    main()
