"""Training throughput (fwd + bwd) of MosaicBERT vs HF ``BertForMaskedLM`` on padded verses.

Recipe: ``uv run python packages/mosaicbert/benchmarks/bench_throughput.py [--device cuda]``
from the workspace root. Both models are ``--layers`` x ``--hidden`` (default 4 x 256, 4
heads, FFN 1024; MosaicBERT's GeGLU width is 2/3 of it for equal parameters, and
``--same-ffn`` gives it the full width, the paper's 137M-vs-110M setting), vocab 2112. Batches
of 32 KJV verses (lengths drawn from the verse distribution, truncated at 128) padded to 128
positions, MLM labels at 30% of the real tokens. One process, ``--threads`` intra-op
threads (default 1: on a shared machine two OpenMP threads spin at barriers and make times
far noisier); each configuration timed as
the median of ``--repeats`` forward + backward passes after 2 warm-ups
(``trainforge_core.bench.median_time``), the two models alternating batch by batch. Reports
real (non-pad) tokens per second and the ratio. On CUDA, bf16 autocast and every available
attention backend of MosaicBERT (sdpa, flex, flash_varlen when flash-attn is installed).
"""

from __future__ import annotations

import argparse
import logging
import warnings

import torch

from trainforge_core.bench import median_time
from trainforge_mosaicbert import (
    MosaicBertConfig,
    MosaicBertForMaskedLM,
    flash_attn_available,
    kjv_verse_mlm_data,
    mlm_mask,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--same-ffn", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.INFO)
    warnings.simplefilter("ignore")
    from transformers import BertConfig, BertForMaskedLM

    device = torch.device(args.device)
    data = kjv_verse_mlm_data(2048, max_len=128)
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(args.repeats + 2):
        pick = torch.randint(0, len(data.train), (args.batch,), generator=gen).tolist()
        ids, mask = data.collate([data.train[i] for i in pick], pad_to=128)
        inputs, labels = mlm_mask(
            ids,
            mask,
            mask_id=data.mask_id,
            vocab_size=data.vocab_size,
            mlm_probability=0.3,
            special_ids=data.special_ids,
            generator=gen,
        )
        batches.append((inputs.to(device), mask.to(device), labels.to(device)))
    real = sum(int(b[1].sum()) for b in batches) / len(batches)
    ffn = 4 * args.hidden
    torch.manual_seed(0)
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=data.vocab_size,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=ffn,
            max_position_embeddings=128,
            attn_implementation="sdpa",
        )
    ).to(device)
    impls = ["sdpa"]
    if device.type == "cuda":
        impls += ["flex"] + (["flash_varlen"] if flash_attn_available() else [])
    models = {"HF BertForMaskedLM (sdpa)": bert}
    for impl in impls:
        cfg = MosaicBertConfig(
            vocab_size=data.vocab_size,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=ffn if args.same_ffn else round(2 * ffn / 3),
            attn_impl=impl,
        )
        models[f"MosaicBERT ({impl})"] = MosaicBertForMaskedLM(cfg).to(device)
    use_amp = device.type == "cuda"

    def step_fn(model):
        it = iter(batches * 100)

        def run():
            ids, mask, labels = next(it)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    results = {}
    fns = {name: step_fn(m) for name, m in models.items()}
    for fn in fns.values():  # warm-up (and compile, for flex on CUDA)
        for _ in range(2):
            fn()
    times = {name: [] for name in models}
    for _ in range(args.repeats):  # alternate, so load falls on every model alike
        for name, fn in fns.items():
            times[name].append(median_time(fn, warmup=0, repeats=1, device=device).median)
    for name, ts in times.items():
        ts.sort()
        results[name] = ts[len(ts) // 2]
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    base = results["HF BertForMaskedLM (sdpa)"]
    padding = 1 - real / (args.batch * 128)
    print(
        f"device {device}, {args.layers}x{args.hidden}, batch {args.batch} padded to 128, "
        f"{100 * padding:.0f}% padding, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}"
    )
    print("| model | params | fwd+bwd ms | real tokens/s | vs HF BERT |")
    print("|---|---|---|---|---|")
    for name, t in results.items():
        print(
            f"| {name} | {n_params[name] / 1e6:.2f}M | {1000 * t:.1f} | {real / t:,.0f} "
            f"| {base / t:.2f}x |"
        )


if __name__ == "__main__":
    main()
