"""Cost of MeCo's data path on CPU: formatting + packing throughput, and the forward cost of
the two ways to block cross-document attention (restarting position ids vs an explicit 4-D
mask) against an unmasked forward.

Recipe:
    uv run python packages/meco/benchmarks/bench_meco_data.py [--chapters 300] [--seq-len 128]

Prints a table; record it in the README with the date, machine and versions.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from trainforge_core.data import kjv_hf_tokenizer, kjv_split
from trainforge_core.models import tiny_llama
from trainforge_meco import MeCoFormatter, pack_documents
from trainforge_meco.demo import book_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--format-rounds", type=int, default=6)
    parser.add_argument("--forward-rounds", type=int, default=20)
    args = parser.parse_args()

    tok = kjv_hf_tokenizer()
    fmt = MeCoFormatter(tok)
    docs = kjv_split("train")[: args.chapters]
    ids = tok([d.text for d in docs], add_special_tokens=False)["input_ids"]
    chunk = args.seq_len - 32
    pieces = [
        (d.book, x[i : i + chunk])
        for d, x in zip(docs, ids, strict=True)
        for i in range(0, len(x), chunk)
    ]
    n_tokens = sum(len(p) for _, p in pieces)

    # Paired timings in one process: every variant is warmed up first, then the variants
    # run in rounds whose order alternates (A B C, C B A, ...), so no variant pays the
    # warm-up or always runs first; the median over rounds is reported.
    def paired(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
        for call in calls.values():
            call()
        times: dict[str, list[float]] = {name: [] for name in calls}
        names = list(calls)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
        return times

    rows = []
    formatting = {
        "format plain + pack (`complete`)": lambda: pack_documents(
            [fmt(p) for _, p in pieces], args.seq_len, "complete", pad_id=tok.pad_token_id
        ),
        "format with URL + pack (`complete`)": lambda: pack_documents(
            [fmt(p, book_url(b)) for b, p in pieces],
            args.seq_len,
            "complete",
            pad_id=tok.pad_token_id,
        ),
    }
    for name, ts in paired(formatting, args.format_rounds).items():
        rate = n_tokens / statistics.median(ts) / 1e3
        rows.append((name, f"{rate:.0f} k document tokens/s", f"median of {len(ts)}"))

    model = tiny_llama(vocab_size=len(tok), hidden_size=128, num_layers=2, num_heads=4).eval()
    sub = pack_documents(
        [fmt(p, book_url(b)) for b, p in pieces[: 4 * args.batch]], args.seq_len, "complete"
    )
    # the same rows for the three variants; only the attention pattern differs
    inputs = {
        k: v[: args.batch] if isinstance(v, torch.Tensor) else v
        for k, v in sub.model_inputs("position_ids").items()
        if k != "labels"
    }
    masked = {
        k: v[: args.batch] if isinstance(v, torch.Tensor) else v
        for k, v in sub.model_inputs("mask").items()
        if k != "labels"
    }
    forwards = {
        "forward, no document mask (cross-document attention)": lambda: model(
            input_ids=inputs["input_ids"], use_cache=False
        ),
        "forward, restarting `position_ids` (transformers builds the mask)": lambda: model(
            **inputs
        ),
        "forward, explicit 4-D block-causal mask": lambda: model(**masked),
    }
    with torch.no_grad():
        times = paired(forwards, args.forward_rounds)
    base = statistics.median(next(iter(times.values())))
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            (
                name,
                f"{med * 1e3:.1f} ms / batch {args.batch}x{args.seq_len} ({med / base:.2f}x)",
                f"median of {len(ts)}",
            )
        )

    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, threads {torch.get_num_threads()}"
    )
    print("| measurement | result | timing |\n|---|---|---|")
    for name, value, n in rows:
        print(f"| {name} | {value} | {n} |")


if __name__ == "__main__":
    main()
