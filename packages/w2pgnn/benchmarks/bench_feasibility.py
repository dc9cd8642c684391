"""Time a full feasibility estimate, ours against the reference's algorithm as written.

Recipe:
    uv run python packages/w2pgnn/benchmarks/bench_feasibility.py [--float32] [resolution ...]

Data: 200 pre-training graphs (two synthetic domains of 100 graphs, simulator.py graphon
types 0 and 10, 20-40 nodes) and 50 downstream graphs (0.7 type 0 + 0.3 type 10 graphon).
For each resolution, one process, single-threaded torch, the same data:

* "reference": ``reference_algorithm.py`` (this folder), the reference's pipeline re-written
  from its code: networkx statistics, KMeans, SAS, ``alpha_fit`` with autograd through the
  unrolled entropic GW, POT's exact GW; float64 (``--float32`` adds a row at the reference's
  own float32 solver precision);
* "ours": ``GraphonBasis.fit`` for the three splits and ``feasibility`` with the default
  ``FeasibilityConfig`` (the same gradient, in reverse mode
  with the fixed-point skip).

Prints per phase seconds, the scores of the three splits and their largest difference.
Times are of one run on whatever machine this is (say in the README if it was loaded).
"""

from __future__ import annotations

import sys
import time

import torch
from reference_algorithm import feasibility_scores

from trainforge_w2pgnn import GraphonBasis, estimate_graphon, feasibility, sample_graphs
from trainforge_w2pgnn import synthetic_graphon as sg


def data():
    gen = torch.Generator().manual_seed(0)
    sets = {
        "d0": sample_graphs(sg(0, 200), 100, (20, 40), gen),
        "d1": sample_graphs(sg(10, 200), 100, (20, 40), gen),
    }
    down = sample_graphs(0.7 * sg(0, 200) + 0.3 * sg(10, 200), 50, (20, 40), gen)
    return sets, down


def ours(sets, down, r, times):
    t = time.perf_counter()
    topo = GraphonBasis.fit(sets, "topo", resolution=r)
    times["topo split basis (stats, KMeans, graphons)"] = time.perf_counter() - t
    t = time.perf_counter()
    integ = GraphonBasis.fit(sets, "integrated", resolution=r)
    dom = GraphonBasis.fit(sets, "domain", resolution=r)
    target = estimate_graphon(down, resolution=r)
    times["other graphons"] = time.perf_counter() - t
    t = time.perf_counter()
    s_int = feasibility(integ, target).score
    times["exact GW"] = time.perf_counter() - t
    t = time.perf_counter()
    s = [s_int, feasibility(dom, target).score, feasibility(topo, target).score]
    times["fits (+ their exact GW)"] = time.perf_counter() - t
    return s


def main(args: list[str]) -> None:
    torch.set_num_threads(1)
    f32 = "--float32" in args
    resolutions = [int(a) for a in args if not a.startswith("--")] or [25, 50]
    sets, down = data()
    estimate_graphon(down, resolution=8)  # warm imports (skimage, POT, scipy)
    feasibility_scores({"a": down[:6], "b": down[6:12]}, down[:5], 8)
    print("| r | pipeline | phase seconds | total s | integrated | domain | topo |")
    print("|---|---|---|---|---|---|---|")
    for r in resolutions:
        rows = []
        runs = [("reference (float64)", lambda t, r=r: feasibility_scores(sets, down, r, times=t))]
        runs.append(("ours", lambda t, r=r: ours(sets, down, r, t)))
        if f32:
            runs.append(
                (
                    "reference (float32, as written)",
                    lambda t, r=r: feasibility_scores(sets, down, r, torch.float32, times=t),
                )
            )
        for name, fn in runs:
            times: dict[str, float] = {}
            t0 = time.perf_counter()
            scores = fn(times)
            total = time.perf_counter() - t0
            rows.append(scores)
            phases = ", ".join(f"{k} {v:.1f}" for k, v in times.items())
            print(
                f"| {r} | {name} | {phases} | {total:.1f} | "
                + " | ".join(f"{s:.7f}" for s in scores)
                + " |",
                flush=True,
            )
        diff = max(abs(a - b) for a, b in zip(rows[0], rows[1], strict=True))
        print(f"| {r} | max abs score difference ours vs reference (float64) | {diff:.1e} |||||")


if __name__ == "__main__":
    main(sys.argv[1:])
