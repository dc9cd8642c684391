"""Cost of the growth operators (a one-time copy; nothing to accelerate).

Recipe: ``OMP_NUM_THREADS=1 uv run python packages/gstack/benchmarks/bench_growth.py`` from the
workspace root. Builds a Llama (hidden 256, 4 layers, vocab 2048, tied embeddings) from its
config, times each operator (median of 3 after 1 warm-up, ``trainforge_core.bench``) and
prints a Markdown table with the grown model's size. (CPU peak-RSS is not reported: the
allocator reuses the previous copy's pages, so it reads 0 for most rows.)
"""

from __future__ import annotations

import logging
import warnings

import torch

from trainforge_core.bench import median_time
from trainforge_core.models import tiny_llama
from trainforge_core.surgery import count_parameters
from trainforge_gstack import grow_depth, grow_width


def main() -> None:
    logging.disable(logging.INFO)
    warnings.simplefilter("ignore")
    small = tiny_llama(seed=0, num_layers=4, hidden_size=256, num_heads=4, vocab_size=2048)
    cases = {
        "grow_depth stack x4": lambda: grow_depth(small, 4, "stack"),
        "grow_depth zero x4": lambda: grow_depth(small, 4, "zero"),
        "grow_depth random x4": lambda: grow_depth(small, 4, "random"),
        "grow_width split 256->512": lambda: grow_width(small, 512, "split"),
        "grow_width zero 256->384": lambda: grow_width(small, 384, "zero"),
    }
    print(f"source: {count_parameters(small):,} parameters, torch {torch.__version__}")
    print("| operator | target params | target MiB (fp32) | median s |")
    print("|---|---|---|---|")
    for name, fn in cases.items():
        big = fn()
        timing = median_time(fn, warmup=1, repeats=3)
        n = count_parameters(big)
        print(f"| {name} | {n:,} | {4 * n / 2**20:.1f} | {timing.median:.3f} |")


if __name__ == "__main__":
    main()
