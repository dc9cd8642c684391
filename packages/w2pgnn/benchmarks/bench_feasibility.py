"""Time a full feasibility estimate: graphon estimation + the three bases + mixture fits.

Recipe:
    uv run python packages/w2pgnn/benchmarks/bench_feasibility.py [resolution ...]

Data: 200 pre-training graphs (two synthetic domains of 100 graphs, simulator.py graphon
types 0 and 10, 20-40 nodes) and 50 downstream graphs (0.7 type 0 + 0.3 type 10 graphon).
Two settings, one process each time:

* "reference": the reference's fit as written (gradient through the unrolled entropic GW
  solver), graphons estimated with torch's default thread count;
* "ours": envelope gradient, everything single-threaded.

`fit_mixture` itself runs single-threaded for r <= 256 in both settings.

Prints, per resolution and setting, the seconds spent estimating graphons (bases and the
downstream graphon), fitting mixtures and solving the exact GW of the best mixtures, and the
scores of the three splits. Times are of one run (the machine is shared).
"""

from __future__ import annotations

import sys
import time

import torch

from trainforge_w2pgnn import (
    FeasibilityConfig,
    GraphonBasis,
    estimate_graphon,
    feasibility,
    sample_graphs,
    synthetic_graphon,
)


def main(resolutions: list[int]) -> None:
    gen = torch.Generator().manual_seed(0)
    sets = {
        "d0": sample_graphs(synthetic_graphon(0, 200), 100, (20, 40), gen),
        "d1": sample_graphs(synthetic_graphon(10, 200), 100, (20, 40), gen),
    }
    down = sample_graphs(
        0.7 * synthetic_graphon(0, 200) + 0.3 * synthetic_graphon(10, 200), 50, (20, 40), gen
    )
    estimate_graphon(down, resolution=8)  # warm imports (skimage, POT)
    print("| r | setting | graphons s | fits + exact GW s | integrated | domain | topo |")
    print("|---|---|---|---|---|---|---|")
    default_threads = torch.get_num_threads()
    for r in resolutions:
        for name, cfg, threads in (
            ("reference", FeasibilityConfig(unrolled=True), default_threads),
            ("ours", FeasibilityConfig(unrolled=False), 1),
        ):
            torch.set_num_threads(threads)
            t = time.perf_counter()
            bases = [
                GraphonBasis.fit(sets, s, resolution=r) for s in ("integrated", "domain", "topo")
            ]
            target = estimate_graphon(down, resolution=r)
            t_est = time.perf_counter() - t
            t = time.perf_counter()
            scores = [feasibility(b, target, config=cfg).score for b in bases]
            t_fit = time.perf_counter() - t
            print(
                f"| {r} | {name} | {t_est:.1f} | {t_fit:.1f} | "
                + " | ".join(f"{s:.6f}" for s in scores)
                + " |",
                flush=True,
            )
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [25, 50])
