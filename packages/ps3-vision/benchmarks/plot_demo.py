"""Draw the README figure from a full demo's ``report.json``.

    trainforge demo ps3-vision --out /tmp/ps3-demo
    python packages/ps3-vision/benchmarks/plot_demo.py /tmp/ps3-demo/report.json \
        packages/ps3-vision/assets/demo-curves.png

Left: hit rate against tokens per image, one marker per arm and seed. Middle: encode +
scoring latency per image. Right: the training loss and the selector's box BCE per seed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

ARMS = ("low-res", "PS3", "PS3 random", "full high-res")
MARKERS = {"low-res": "s", "PS3": "o", "PS3 random": "x", "full high-res": "^"}


def main(src: str, dst: str) -> None:
    rep = json.loads(Path(src).read_text())
    d = rep["details"]
    per_seed = d["per_seed"]
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.3))
    for k, arm in enumerate(ARMS):
        xs = [r[arm]["tokens"] for r in per_seed.values()]
        ys = [r[arm]["hit"] for r in per_seed.values()]
        ax[0].scatter(xs, ys, marker=MARKERS[arm], s=60, label=arm, color=f"C{k}")
        ms = [r[arm]["ms"] for r in per_seed.values()]
        ax[1].bar(k, np.mean(ms), color=f"C{k}")
        ax[1].scatter([k] * len(ms), ms, color="k", s=12, zorder=3)
    ax[0].set_xscale("log")
    ax[0].set_xlabel("tokens per image (log)")
    ax[0].set_ylabel("hit rate (held-out canvases)")
    ax[0].set_ylim(0, 1.05)
    ax[0].axhline(1 / 3, ls=":", color="grey", lw=1, label="1/3: a guess among the 3 objects")
    ax[0].set_title(f"hit rate vs tokens, seeds {', '.join(per_seed)}")
    ax[0].legend()
    ax[1].set_xticks(range(len(ARMS)), ARMS)
    ax[1].set_ylabel("ms per image (encode + scoring)")
    ax[1].set_title("latency per image (bar: mean, dots: seeds)")
    for k, sd in enumerate(per_seed):
        for name, ys, ls in (("loss", d["losses"][sd], "-"), ("box BCE", d["box_bce"][sd], "--")):
            w = max(1, len(ys) // 50)
            sm = np.convolve(ys, np.ones(w) / w, mode="valid")
            lab = f"{name}, seed {sd}"
            ax[2].plot(np.arange(len(sm)) + w - 1, sm, ls, color=f"C{k}", label=lab)
    ax[2].set_yscale("log")
    ax[2].set_xlabel("step")
    ax[2].set_title("training (moving mean)")
    ax[2].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=100)
    print(dst)


if __name__ == "__main__":
    main(*sys.argv[1:3])
