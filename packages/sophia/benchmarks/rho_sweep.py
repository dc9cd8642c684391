"""SophiaG's ``rho`` on the full demo's setup: the win rate and the final held-out loss.

The reference README's tuning rule: keep the fraction of unclipped coordinates (the win
rate, :meth:`SophiaG.stats`) in 0.1-0.5 by adjusting ``rho``. This runs the full demo's
SophiaG training (tiny Llama on the KJV Bible, 200 steps, seed 0) at one learning rate for
each ``rho`` and prints the win rate after each Hessian estimate and the final loss.

Recipe (from the repository root; about 1 minute per rho on one idle core)::

    OMP_NUM_THREADS=1 uv run python packages/sophia/benchmarks/rho_sweep.py \\
        --rhos 0.05 0.5 2 8 --lr 3e-3
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from trainforge_core.data import kjv_lm_data
from trainforge_sophia import demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rhos", nargs="+", type=float, default=[0.05, 0.5, 2.0, 8.0])
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the quick demo's setup")
    args = parser.parse_args()
    base = demo.QUICK if args.quick else demo.FULL
    data = kjv_lm_data(demo.VOCAB)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print("| rho | final held-out loss | win rate at each estimate | end |")
    print("| ---: | ---: | --- | ---: |")
    for rho in args.rhos:
        setup = dataclasses.replace(base, rho=rho)
        start = time.perf_counter()
        result, extra = demo._run("sophiag", args.lr, setup, data, args.seed)
        wins = [round(w, 3) for w in extra["win_rates"]]
        print(f"| {rho:g} | {result.final_eval_loss:.3f} | {wins} | "
              f"{extra['stats']['win_rate']:.3f} |  ({time.perf_counter() - start:.0f} s)",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
