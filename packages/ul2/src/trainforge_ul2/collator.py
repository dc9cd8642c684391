"""``DataCollatorForUL2``: the mixture of denoisers as a transformers-style data collator.

A collator is called with a list of examples (dicts with ``input_ids``: a chunk of raw
token ids, and optionally ``denoiser``: the index of the denoiser to apply, as
:class:`~trainforge_ul2.dataset.UL2PackedDataset` yields them) and returns a batch of torch
tensors ready for ``model(**batch)``:

- ``arch="encoder_decoder"`` (T5, BART...): ``input_ids`` / ``attention_mask`` of width
  ``input_length`` for the encoder, ``labels`` (targets, ``-100`` on padding) of width
  ``targets_length``; the model builds its decoder inputs from the labels.
- ``arch="decoder_only"`` (Llama, GPT-2...): inputs and targets concatenated into one
  sequence of width ``input_length + targets_length``, ``labels`` equal to the ids on the
  targets and ``-100`` elsewhere (loss on targets only), and either a 4-D additive
  prefix-LM ``attention_mask`` ``[B, 1, T, T]`` (bidirectional over the inputs, causal over
  the targets) or, with ``prefix_lm_mask=False``, the plain 2-D padding mask (causal).

Examples of one (denoiser, chunk length) draw their span lengths together; the whole batch,
whatever its mix of denoisers, is then corrupted in one pass of array operations
(:mod:`trainforge_ul2.denoisers`).
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from trainforge_ul2.denoisers import (
    MODE_TOKENS,
    UL2_PAPER_MIXTURE,
    Denoiser,
    Mixture,
    _check_int,
    _check_rng,
    _corrupt_rows,
    _prefix_lengths,
    _span_counts,
    _span_lengths,
    prefix_lm_lengths,
    span_corruption_lengths,
)

logger = logging.getLogger(__name__)

Arch = Literal["encoder_decoder", "decoder_only"]
_ARCHS = ("encoder_decoder", "decoder_only")
LABEL_PAD = -100  # the ignore_index of torch's cross entropy and of transformers' models


def sentinel_token(i: int) -> str:
    """The name of T5's ``i``-th sentinel (``<extra_id_0>`` marks the first span)."""
    return f"<extra_id_{i}>"


def _token_id(tokenizer: Any, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        return None
    return int(tid)


def find_sentinel_ids(tokenizer: Any) -> list[int]:
    """The ids of ``<extra_id_0>``, ``<extra_id_1>``, ... that the tokenizer has, in order
    (stops at the first missing one)."""
    _check_tokenizer(tokenizer)
    ids: list[int] = []
    while (tid := _token_id(tokenizer, sentinel_token(len(ids)))) is not None:
        ids.append(tid)
    return ids


def _check_tokenizer(tokenizer: Any) -> None:
    for attr in ("convert_tokens_to_ids", "encode", "add_tokens"):
        if not callable(getattr(tokenizer, attr, None)):
            raise TypeError(
                "tokenizer must be a transformers tokenizer (PreTrainedTokenizerBase), got "
                f"{type(tokenizer).__name__} without .{attr}()"
            )


def _mode_strings(mode_tokens: str | Mapping[str, str] | None) -> dict[str, str] | None:
    if mode_tokens is None:
        return None
    if isinstance(mode_tokens, str):
        if mode_tokens not in MODE_TOKENS:
            raise ValueError(
                f"mode_tokens must be one of {sorted(MODE_TOKENS)}, a mapping paradigm -> "
                f"token, or None; got {mode_tokens!r}"
            )
        return dict(MODE_TOKENS[mode_tokens])
    if isinstance(mode_tokens, Mapping):
        bad = {k: v for k, v in mode_tokens.items() if k not in ("R", "X", "S")}
        if bad or not all(isinstance(v, str) and v for v in mode_tokens.values()):
            raise ValueError(
                "a mode_tokens mapping must map paradigms 'R', 'X', 'S' to non-empty strings, "
                f"got {dict(mode_tokens)!r}"
            )
        return dict(mode_tokens)
    raise TypeError(f"mode_tokens must be a string, a mapping or None, got {mode_tokens!r}")


def add_ul2_tokens(
    tokenizer: Any, num_sentinels: int = 100, mode_tokens: str | Mapping[str, str] | None = "paper"
) -> int:
    """Add the missing ``<extra_id_*>`` sentinels (up to ``num_sentinels``) and mode tokens
    to ``tokenizer`` as special tokens; return how many were added. Resize the model's
    embeddings afterwards (``model.resize_token_embeddings(len(tokenizer))``)."""
    _check_tokenizer(tokenizer)
    num_sentinels = _check_int(num_sentinels, "num_sentinels", 0)
    new = [
        sentinel_token(i)
        for i in range(num_sentinels)
        if _token_id(tokenizer, sentinel_token(i)) is None
    ]
    modes = _mode_strings(mode_tokens) or {}
    new += [m for m in dict.fromkeys(modes.values()) if _token_id(tokenizer, m) is None]
    return int(tokenizer.add_tokens(new, special_tokens=True)) if new else 0


@dataclass(frozen=True)
class DenoiserPlan:
    """How the collator applies one denoiser at its ``input_length``."""

    denoiser: Denoiser
    mode_ids: tuple[int, ...]
    raw_length: int  # tokens cut from the stream for one example
    max_targets: int  # longest targets (with EOS) a full chunk produces
    num_spans: int  # sentinels a full chunk needs (0 for the S denoiser)


class DataCollatorForUL2:
    """UL2's mixture of denoisers as a data collator (see the module docstring).

    Args:
        tokenizer: a transformers tokenizer with an EOS and a pad token and T5's
            ``<extra_id_*>`` sentinels (or ``sentinel_ids``).
        mixture: the denoisers and their rates (default: the paper's 7 denoisers).
        mode_tokens: "paper" ([R]/[X]/[S]), "ul2_20b" ([NLU]/[NLG]/[S2S]), a mapping
            paradigm -> string, or None (no mode token). The string is encoded with the
            tokenizer and prepended to the inputs (the appendix's ``prepend_prompt``).
        input_length: encoder input width, mode token included; each span denoiser's raw
            chunk length is planned so its inputs fill it exactly.
        arch: "encoder_decoder" or "decoder_only".
        prefix_lm_mask: decoder-only only: a 4-D prefix-LM mask (True) or causal (False).
        add_sentinels: when the tokenizer has fewer sentinels than the mixture needs, add
            ``<extra_id_N>`` tokens to it (then resize the model's embeddings) instead of
            raising.
        sentinel_ids: explicit sentinel ids (first span first) instead of ``<extra_id_*>``.
        seed: seed of the collator's generator (each DataLoader worker and each
            ``torch.distributed`` rank derives its own).
        mask_dtype: dtype of the 4-D mask: floating (additive, the model's compute dtype;
            eager and SDPA attention) or ``torch.bool`` (SDPA only; a quarter of the memory).
        compact_mask: decoder-only prefix LM only: instead of the 4-D mask (``[B, 1, T, T]``,
            256 MB per batch of 64 at T = 1023 in float32, which costs far more to build
            than the denoising itself), return the 2-D padding ``attention_mask`` and
            ``prefix_lengths`` ``[B]``; :func:`expand_prefix_lm_mask` turns that into the
            4-D mask on the model's device in the training step (``model(**batch)`` on the
            compact batch is refused by design: the prefix would be silently ignored).
    """

    def __init__(
        self,
        tokenizer: Any,
        mixture: Mixture = UL2_PAPER_MIXTURE,
        mode_tokens: str | Mapping[str, str] | None = "paper",
        input_length: int = 512,
        arch: Arch = "encoder_decoder",
        prefix_lm_mask: bool = True,
        add_sentinels: bool = False,
        sentinel_ids: Sequence[int] | None = None,
        seed: int = 0,
        mask_dtype: torch.dtype = torch.float32,
        compact_mask: bool = False,
    ) -> None:
        _check_tokenizer(tokenizer)
        if not isinstance(mixture, Mixture):
            raise TypeError(f"mixture must be a trainforge_ul2.Mixture, got {mixture!r}")
        if arch not in _ARCHS:
            raise ValueError(f"arch must be one of {_ARCHS}, got {arch!r}")
        if not isinstance(prefix_lm_mask, bool) or not isinstance(add_sentinels, bool):
            raise TypeError(
                f"prefix_lm_mask and add_sentinels must be bools, got {prefix_lm_mask!r}, "
                f"{add_sentinels!r}"
            )
        if not isinstance(mask_dtype, torch.dtype) or not (
            mask_dtype.is_floating_point or mask_dtype == torch.bool
        ):
            raise TypeError(
                f"mask_dtype must be a floating torch.dtype or torch.bool, got {mask_dtype!r}"
            )
        self.input_length = _check_int(input_length, "input_length", 4)
        self.seed = _check_int(seed, "seed", 0)
        self.tokenizer = tokenizer
        self.mixture = mixture
        self.arch: Arch = arch
        self.prefix_lm_mask = prefix_lm_mask
        self.mask_dtype = mask_dtype
        if not isinstance(compact_mask, bool):
            raise TypeError(f"compact_mask must be a bool, got {compact_mask!r}")
        if compact_mask and not (arch == "decoder_only" and prefix_lm_mask):
            raise ValueError(
                "compact_mask=True needs arch='decoder_only' and prefix_lm_mask=True (it is a "
                f"compact prefix-LM mask), got arch={arch!r}, prefix_lm_mask={prefix_lm_mask!r}"
            )
        self.compact_mask = compact_mask
        if tokenizer.eos_token_id is None:
            raise ValueError("tokenizer has no eos_token_id; UL2 appends EOS to inputs and targets")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad_token_id; set tokenizer.pad_token first")
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id)

        modes = _mode_strings(mode_tokens)
        plans = []
        for d in mixture.denoisers:
            mode_ids: tuple[int, ...] = ()
            if modes is not None:
                if d.paradigm not in modes:
                    raise ValueError(f"mode_tokens has no token for paradigm {d.paradigm!r}")
                mode_ids = tuple(
                    int(i) for i in tokenizer.encode(modes[d.paradigm], add_special_tokens=False)
                )
                unk = tokenizer.unk_token_id
                if not mode_ids or (unk is not None and unk in mode_ids):
                    raise ValueError(
                        f"mode token {modes[d.paradigm]!r} encodes to {list(mode_ids)} (empty "
                        "or unknown) with this tokenizer; add it first with "
                        "add_ul2_tokens(tokenizer, mode_tokens=...) or pass mode_tokens=None"
                    )
            room = self.input_length - len(mode_ids)
            try:
                if d.is_prefix_lm:
                    raw, max_t = prefix_lm_lengths(room, d.noise_density)
                    spans = 0
                else:
                    raw, max_t = span_corruption_lengths(
                        room, d.noise_density, d.mean_noise_span_length
                    )
                    spans = _span_counts(raw, d.noise_density, d.mean_noise_span_length)[1]
            except ValueError as err:
                raise ValueError(
                    f"input_length={self.input_length} for denoiser {d.name}: {err}"
                ) from None
            plans.append(DenoiserPlan(d, mode_ids, raw, max_t, spans))
        self.plans: tuple[DenoiserPlan, ...] = tuple(plans)
        self.targets_length = max(p.max_targets for p in plans)
        self.sentinel_ids = self._resolve_sentinels(sentinel_ids, add_sentinels)
        self._rng: np.random.Generator | None = None
        self._rng_stream: tuple[int, int] | None = None

    # -- set-up ---------------------------------------------------------------------------
    def _resolve_sentinels(self, sentinel_ids: Sequence[int] | None, add: bool) -> np.ndarray:
        needed = max(p.num_spans for p in self.plans)
        if sentinel_ids is not None:
            ids = list(sentinel_ids) if isinstance(sentinel_ids, Sequence | np.ndarray) else None
            if ids is None or not all(isinstance(i, int | np.integer) and i >= 0 for i in ids):
                raise TypeError(
                    f"sentinel_ids must be a sequence of non-negative ints, got {sentinel_ids!r}"
                )
            if needed and len(ids) < needed:
                raise ValueError(
                    f"the mixture needs {needed} sentinels at input_length={self.input_length} "
                    f"but sentinel_ids has {len(ids)}"
                )
            return np.asarray(ids, dtype=np.int64)
        ids = find_sentinel_ids(self.tokenizer)
        if needed == 0:
            return np.asarray(ids, dtype=np.int64)
        if len(ids) < needed:
            worst = max(self.plans, key=lambda p: p.num_spans).denoiser.name
            if not add:
                what = "no sentinel tokens" if not ids else f"only {len(ids)} sentinel tokens"
                raise ValueError(
                    f"tokenizer has {what} (<extra_id_0>, ...) but {worst} at "
                    f"input_length={self.input_length} corrupts up to {needed} spans; pass "
                    "add_sentinels=True (and resize the model's embeddings), lower "
                    "input_length, or give sentinel_ids. Reusing ordinary vocabulary ids, "
                    "as seqio does, is refused."
                )
            added = add_ul2_tokens(self.tokenizer, num_sentinels=needed, mode_tokens=None)
            logger.warning(
                "added %d sentinel tokens to the tokenizer (now %d tokens); resize the model's "
                "embeddings: model.resize_token_embeddings(len(tokenizer))",
                added,
                len(self.tokenizer),
            )
            ids = find_sentinel_ids(self.tokenizer)
        return np.asarray(ids, dtype=np.int64)

    @property
    def raw_lengths(self) -> tuple[int, ...]:
        """Raw chunk length of each denoiser (what a packed dataset cuts per example)."""
        return tuple(p.raw_length for p in self.plans)

    @property
    def sequence_length(self) -> int:
        """Width of a batch: encoder width, or inputs + targets for decoder-only."""
        if self.arch == "encoder_decoder":
            return self.input_length
        return self.input_length + self.targets_length

    def _generator(self) -> np.random.Generator:
        """The collator's generator for this process: derived from ``seed``, the DataLoader
        worker id and, when ``torch.distributed`` is initialised, the rank (so ranks given
        the same seed still draw different denoisers and spans)."""
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else int(info.id)
        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else -1
        if self._rng is None or self._rng_stream != (worker, rank):
            seed: int | list[int] = self.seed if worker < 0 else [self.seed, worker]
            if rank >= 0:
                seed = [self.seed, worker + 1, rank]
            self._rng = np.random.default_rng(seed)
            self._rng_stream = (worker, rank)
        return self._rng

    # -- collation ------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Any]) -> dict[str, torch.Tensor]:
        return self.collate(examples)

    def collate(
        self, examples: Sequence[Any], rng: np.random.Generator | int | None = None
    ) -> dict[str, torch.Tensor]:
        """The batch for ``examples``; ``rng`` overrides the collator's own generator."""
        gen = self._generator() if rng is None else _check_rng(rng)
        chunks, which = self._read(examples, gen)
        inputs, in_len, targets, t_len = _denoise_rows(
            gen,
            chunks,
            which,
            self.plans,
            self.sentinel_ids,
            self.eos_id,
            (self.input_length, self.targets_length),
        )
        if self.arch == "encoder_decoder":
            attention = np.arange(self.input_length)[None, :] < in_len[:, None]
            cols_t = np.arange(self.targets_length)[None, :]
            return {
                "input_ids": torch.from_numpy(np.where(attention, inputs, self.pad_id)),
                "attention_mask": torch.from_numpy(attention.astype(np.int64)),
                "labels": torch.from_numpy(np.where(cols_t < t_len[:, None], targets, LABEL_PAD)),
            }
        return self._decoder_only(inputs, in_len, targets, t_len)

    def _read(
        self, examples: Sequence[Any], gen: np.random.Generator
    ) -> tuple[list[np.ndarray], np.ndarray]:
        if not isinstance(examples, Sequence) or isinstance(examples, str | bytes) or not examples:
            raise TypeError(f"examples must be a non-empty list of examples, got {examples!r}")
        n_plans = len(self.plans)
        given = np.full(len(examples), -1, dtype=np.int64)
        raw: list[Any] = []
        for i, ex in enumerate(examples):
            if type(ex) is dict or isinstance(ex, Mapping):
                ids = ex.get("input_ids")
                if ids is None:
                    raise ValueError(f"example {i} has no 'input_ids' (keys: {sorted(ex)})")
                raw.append(ids)
                d = ex.get("denoiser")
                if d is not None:
                    if type(d) is not int:
                        d = int(d.item()) if isinstance(d, torch.Tensor | np.ndarray) else d
                    if not isinstance(d, int | np.integer) or not 0 <= d < n_plans:
                        raise ValueError(
                            f"example {i}: denoiser must be an index in [0, {n_plans}), got {d!r}"
                        )
                    given[i] = d
            else:
                raw.append(ex)
        missing = given < 0
        if missing.any():
            given[missing] = self.mixture.sample(int(missing.sum()), gen)
        limits = [p.raw_length for p in self.plans]
        chunks = []
        for i, ids in enumerate(raw):
            if type(ids) is np.ndarray:
                arr = ids
            else:
                arr = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
            if arr.ndim != 1 or not (arr.size == 0 or arr.dtype.kind in "iu"):
                raise TypeError(f"example {i}: input_ids must be a 1-D sequence of token ids")
            arr = arr[: limits[given[i]]]
            if arr.size < 2:
                raise ValueError(
                    f"example {i}: a chunk needs at least 2 tokens to be denoised, got {arr.size}"
                )
            chunks.append(arr)
        return chunks, given

    def _decoder_only(
        self, inputs: np.ndarray, in_len: np.ndarray, targets: np.ndarray, t_len: np.ndarray
    ) -> dict[str, torch.Tensor]:
        b = inputs.shape[0]
        width = self.input_length + self.targets_length
        pos = np.arange(width)[None, :]
        from_in = pos < in_len[:, None]
        end = (in_len + t_len)[:, None]
        from_t = (pos >= in_len[:, None]) & (pos < end)
        t_idx = np.clip(pos - in_len[:, None], 0, self.targets_length - 1)
        seq = np.full((b, width), self.pad_id, dtype=np.int64)
        seq[:, : self.input_length] = inputs
        seq = np.where(from_t, np.take_along_axis(targets, t_idx, axis=1), seq)
        seq = np.where(from_in | from_t, seq, self.pad_id)
        labels = np.where(from_t, seq, LABEL_PAD)
        out = {"input_ids": torch.from_numpy(seq), "labels": torch.from_numpy(labels)}
        if self.compact_mask:
            out["attention_mask"] = torch.from_numpy((from_in | from_t).astype(np.int64))
            out["prefix_lengths"] = torch.from_numpy(in_len)
        elif self.prefix_lm_mask:
            out["attention_mask"] = prefix_lm_attention_mask(
                torch.from_numpy(in_len), width, self.mask_dtype
            )
        else:
            out["attention_mask"] = torch.from_numpy((from_in | from_t).astype(np.int64))
        return out


def prefix_lm_attention_mask(
    prefix_lengths: torch.Tensor, length: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """4-D prefix-LM mask ``[B, 1, length, length]``: query i may attend key j when
    ``j <= i`` or ``j < prefix``. Floating ``dtype``: additive (0 allowed, the dtype's
    minimum elsewhere; what transformers' eager and SDPA attention take); ``torch.bool``:
    True where allowed (SDPA only, 4x smaller). Rows of right padding see the real tokens
    (their outputs are ignored by the labels; this avoids all-masked rows)."""
    if not isinstance(prefix_lengths, torch.Tensor) or prefix_lengths.ndim != 1:
        raise TypeError(f"prefix_lengths must be a 1-D tensor, got {prefix_lengths!r}")
    if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype == torch.bool):
        raise TypeError(f"dtype must be a floating torch.dtype or torch.bool, got {dtype!r}")
    length = _check_int(length, "length", 1)
    if bool((prefix_lengths < 0).any()) or bool((prefix_lengths > length).any()):
        raise ValueError(f"prefix_lengths must lie in [0, {length}], got {prefix_lengths.tolist()}")
    dev = prefix_lengths.device
    causal = torch.ones(length, length, dtype=torch.bool, device=dev).tril_()
    j = torch.arange(length, device=dev).view(1, 1, length)
    allowed = causal.unsqueeze(0) | (j < prefix_lengths.view(-1, 1, 1))
    if dtype == torch.bool:
        return allowed.unsqueeze(1)
    return (~allowed).to(dtype).mul_(torch.finfo(dtype).min).unsqueeze(1)


def expand_prefix_lm_mask(
    batch: Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """A compact decoder-only batch (``DataCollatorForUL2(..., compact_mask=True)``) made
    ready for ``model(**batch)``: every tensor moved to ``device`` (default: where they
    are) and ``prefix_lengths`` replaced by the 4-D prefix-LM ``attention_mask`` of
    :func:`prefix_lm_attention_mask`, built there in one vectorised pass (on a GPU, far
    cheaper than building and copying it on the DataLoader's CPU side)."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of tensors, got {type(batch).__name__}")
    for key in ("input_ids", "prefix_lengths"):
        if not isinstance(batch.get(key), torch.Tensor):
            raise ValueError(
                f"batch has no tensor {key!r} (keys: {sorted(batch)}); expected a batch of "
                "DataCollatorForUL2(..., arch='decoder_only', compact_mask=True)"
            )
    out = {
        k: (v.to(device) if device is not None and isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
        if k != "prefix_lengths"
    }
    prefix = batch["prefix_lengths"].to(out["input_ids"].device)
    out["attention_mask"] = prefix_lm_attention_mask(prefix, out["input_ids"].shape[1], dtype)
    return out


@functools.lru_cache(maxsize=64)
def _plan_tables(plans: tuple[DenoiserPlan, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plan: its mode ids (left aligned, ``[P, M]``), their count and whether the
    denoiser marks spans with sentinels (1) or is the prefix LM (0)."""
    width = max(len(p.mode_ids) for p in plans)
    lead = np.zeros((len(plans), width), dtype=np.int64)
    for i, p in enumerate(plans):
        lead[i, : len(p.mode_ids)] = p.mode_ids
    lead_len = np.array([len(p.mode_ids) for p in plans], dtype=np.int64)
    sentinel = np.array([0 if p.denoiser.is_prefix_lm else 1 for p in plans], dtype=np.int64)
    return lead, lead_len, sentinel


def _denoise_rows(
    rng: np.random.Generator,
    chunks: Sequence[np.ndarray],
    which: np.ndarray,
    plans: tuple[DenoiserPlan, ...],
    sentinel_ids: np.ndarray,
    eos_id: int,
    widths: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Corrupt chunk b with ``plans[which[b]]``: inputs (mode ids first, EOS last), their
    lengths, targets (EOS last) and their lengths, ``[B, widths[i]]`` with unspecified ids
    past each row's length.

    Rows of one (denoiser, chunk length) draw their span lengths (or prefix lengths)
    together, groups in order of (denoiser, length), as the randomness contract of
    :mod:`trainforge_ul2.denoisers` says; the whole batch is then gathered in one pass, so
    a mixture costs about what one denoiser does."""
    b = len(chunks)
    lengths = np.fromiter((c.size for c in chunks), dtype=np.int64, count=b)
    keys = which * (int(lengths.max()) + 1) + lengths
    order = np.argsort(keys, kind="stable")  # rows of one (denoiser, length) together
    cuts = np.flatnonzero(keys[order[1:]] != keys[order[:-1]]) + 1
    bounds = [0, *cuts.tolist(), b]
    groups = []
    for lo, hi in itertools.pairwise(bounds):
        first = int(order[lo])
        d = plans[int(which[first])].denoiser
        length = int(lengths[first])
        if d.is_prefix_lm:
            # S: one "span" split at the prefix length, no sentinels
            prefix = _prefix_lengths(rng, hi - lo, length, d.noise_density)
            groups.append(((length - prefix)[:, None], prefix[:, None]))
        else:
            groups.append(
                _span_lengths(rng, hi - lo, length, d.noise_density, d.mean_noise_span_length)
            )
    # filled in sorted order (contiguous blocks), then put back in batch order at once
    spans = max(noise.shape[1] for noise, _ in groups)
    sorted_len = np.zeros((3, b, spans), dtype=np.int64)  # noise, non-noise, span count
    for (lo, hi), (noise, nonnoise) in zip(itertools.pairwise(bounds), groups, strict=True):
        k = noise.shape[1]
        sorted_len[0, lo:hi, :k] = noise
        sorted_len[1, lo:hi, :k] = nonnoise
        sorted_len[2, lo:hi, 0] = k
    span_len = np.empty_like(sorted_len)
    span_len[:, order] = sorted_len
    noise_len, nonnoise_len, num_spans = span_len[0], span_len[1], span_len[2, :, 0]
    starts = np.zeros(b, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    tokens = np.concatenate(chunks).astype(np.int64, copy=False)
    lead, lead_len, sentinel = _plan_tables(plans)
    return _corrupt_rows(
        tokens,
        starts,
        noise_len,
        nonnoise_len,
        num_spans,
        sentinel[which],
        sentinel_ids,
        lead[which],
        lead_len[which],
        widths,
        eos_id,
    )


def denoise(
    tokens: Sequence[int] | np.ndarray,
    denoiser: Denoiser,
    sentinel_ids: Sequence[int] | np.ndarray,
    eos_token_id: int,
    rng: np.random.Generator | int | None = None,
    mode_ids: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Apply one denoiser to one chunk: ``(inputs, targets)`` as 1-D id arrays.

    Span denoisers: inputs = mode ids, the non-noise tokens with a sentinel in place of
    each noise span, EOS; targets = each sentinel followed by its span, EOS. S: inputs =
    mode ids, prefix, EOS; targets = suffix, EOS.
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a Denoiser, got {denoiser!r}")
    arr = np.asarray(tokens)
    if arr.ndim != 1 or arr.size < 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer sequence of >= 2 ids, got {arr!r}")
    eos = _check_int(eos_token_id, "eos_token_id", 0)
    gen = _check_rng(rng)
    sentinels = np.asarray(sentinel_ids, dtype=np.int64).reshape(-1)
    plan = DenoiserPlan(denoiser, tuple(int(i) for i in mode_ids), arr.size, 0, 0)
    lead = len(plan.mode_ids)
    inp, in_len, tgt, t_len = _denoise_rows(
        gen,
        [arr.astype(np.int64)],
        np.zeros(1, dtype=np.int64),
        (plan,),
        sentinels,
        eos,
        (lead + arr.size + 1, arr.size + 1),
    )
    return inp[0, : int(in_len[0])], tgt[0, : int(t_len[0])]
