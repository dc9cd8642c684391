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
import time

import torch
import transformers

from trainforge_core.bench import median_time
from trainforge_core.data import kjv_hf_tokenizer, kjv_split
from trainforge_core.models import tiny_llama
from trainforge_meco import MeCoFormatter, pack_documents
from trainforge_meco.demo import book_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
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

    rows = []
    for name, make in (
        ("format plain + pack", lambda: [fmt(p) for _, p in pieces]),
        ("format with URL + pack", lambda: [fmt(p, book_url(b)) for b, p in pieces]),
    ):
        start = time.perf_counter()
        packed = pack_documents(make(), args.seq_len, "complete", pad_id=tok.pad_token_id)
        seconds = time.perf_counter() - start
        rows.append((name, f"{n_tokens / seconds / 1e3:.0f} k doc tokens/s", len(packed)))

    model = tiny_llama(vocab_size=len(tok), hidden_size=128, num_layers=2, num_heads=4).eval()
    batch = packed.input_ids[: args.batch]
    sub = pack_documents(
        [fmt(p, book_url(b)) for b, p in pieces[: 4 * args.batch]], args.seq_len, "complete"
    )
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
    with torch.no_grad():
        for name, call in (
            ("forward, no document mask", lambda: model(input_ids=batch, use_cache=False)),
            ("forward, position_ids restarts", lambda: model(**inputs)),
            ("forward, explicit 4-D mask", lambda: model(**masked)),
        ):
            t = median_time(call, warmup=2, repeats=10)
            rows.append((name, f"{t.median * 1e3:.1f} ms / batch {args.batch}x{args.seq_len}", ""))

    print(
        f"# {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, threads {torch.get_num_threads()}"
    )
    print("| measurement | result | rows |\n|---|---|---|")
    for name, value, n in rows:
        print(f"| {name} | {value} | {n} |")


if __name__ == "__main__":
    main()
