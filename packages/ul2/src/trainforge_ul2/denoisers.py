"""UL2's denoisers on numpy arrays: span corruption, prefix LM and the mixture.

The algorithms follow T5's preprocessors (``google-research/text-to-text-transfer-transformer:
t5/data/preprocessors.py``: ``random_spans_helper``, ``random_spans_noise_mask``,
``random_prefix_noise_mask``, ``noise_span_to_unique_sentinel``) and the UL2 paper's appendix
function ``ul2_objective`` (arXiv:2205.05131, section 9.2), written here for whole batches
at once: a batch's chunks, whatever their denoisers, are corrupted together with array
operations, never a Python loop over tokens or rows (torch only for one integer cumsum).

Randomness contract (what makes a run reproducible and lets the tests compare against a
plain re-implementation): for a batch of ``B`` chunks of length ``L`` a span mask draws
``rng.random((B, num_noise - 1))`` then ``rng.random((B, num_nonnoise - 1))``; each row's
segment starts are the positions of its ``num_spans - 1`` smallest keys. That is a uniformly
random choice of segmentation, the same distribution as T5's ``seqio.stateless_shuffle``
(whose TensorFlow stream cannot be reproduced without TensorFlow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Paradigm = Literal["R", "X", "S"]
_PARADIGMS = ("R", "X", "S")

# Mode (paradigm) tokens. "paper": section 3.1.3 of the paper ([R], [S], [X]). "ul2_20b": the
# released google/ul2 checkpoint's model card ([NLU] for R, [S2S] for S, [NLG] for X).
MODE_TOKENS: dict[str, dict[str, str]] = {
    "paper": {"R": "[R]", "X": "[X]", "S": "[S]"},
    "ul2_20b": {"R": "[NLU]", "X": "[NLG]", "S": "[S2S]"},
}
"""Mode tokens per denoiser kind: the paper's [R]/[X]/[S] and the released UL2-20B
checkpoint's [NLU]/[NLG]/[S2S]."""


def _check_rng(rng: np.random.Generator | int | None, name: str = "rng") -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool) and rng >= 0):
        return np.random.default_rng(rng)
    raise TypeError(
        f"{name} must be a numpy.random.Generator, a non-negative int seed or None, got {rng!r}"
    )


def _check_density(value: object, name: str = "noise_density") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a float in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in the open interval (0, 1), got {value!r}")
    return float(value)


def _check_span(value: object, name: str = "mean_noise_span_length") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} must be a number >= 1, got {value!r}")
    if value < 1.0:
        raise ValueError(f"{name} must be >= 1 (a span has at least one token), got {value!r}")
    return float(value)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# -- denoisers and mixtures --------------------------------------------------------------
@dataclass(frozen=True)
class Denoiser:
    """One denoising task.

    ``paradigm`` "R" (regular span corruption) and "X" (extreme: long spans or a high rate)
    corrupt random spans of mean length ``mean_noise_span_length`` covering a fraction
    ``noise_density`` of the chunk. "S" is the sequential denoiser (prefix LM): the chunk
    is split at a random point and the suffix, on average a fraction ``noise_density`` of
    the chunk, is the target; it takes no span length.
    """

    paradigm: Paradigm
    noise_density: float
    mean_noise_span_length: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.paradigm not in _PARADIGMS:
            raise ValueError(f"paradigm must be one of {_PARADIGMS}, got {self.paradigm!r}")
        object.__setattr__(self, "noise_density", _check_density(self.noise_density))
        if self.paradigm == "S":
            if self.mean_noise_span_length is not None:
                raise ValueError(
                    "mean_noise_span_length must be None for the S (prefix LM) denoiser, got "
                    f"{self.mean_noise_span_length!r}"
                )
            # t5/data/preprocessors.py:random_prefix_noise_mask: density must not exceed 0.5
            # (the prefix length is drawn from [round((1 - 2r)(L - 1)), L - 1]).
            if self.noise_density > 0.5:
                raise ValueError(
                    "noise_density of an S denoiser must be in (0, 0.5] (the suffix is drawn "
                    f"uniformly up to twice its mean), got {self.noise_density!r}"
                )
        else:
            if self.mean_noise_span_length is None:
                raise ValueError(
                    f"a {self.paradigm} denoiser needs mean_noise_span_length (a number >= 1)"
                )
            span = _check_span(self.mean_noise_span_length)
            object.__setattr__(self, "mean_noise_span_length", span)
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {self.name!r}")
        if not self.name:
            label = (
                f"S(r={self.noise_density:g})"
                if self.paradigm == "S"
                else f"{self.paradigm}(mu={self.mean_noise_span_length:g}, "
                f"r={self.noise_density:g})"
            )
            object.__setattr__(self, "name", label)

    @property
    def is_prefix_lm(self) -> bool:
        return self.paradigm == "S"


@dataclass(frozen=True)
class Mixture:
    """Denoisers and the probability of drawing each one for an example."""

    denoisers: tuple[Denoiser, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        denoisers = tuple(self.denoisers) if isinstance(self.denoisers, list | tuple) else None
        if not denoisers or not all(isinstance(d, Denoiser) for d in denoisers):
            raise TypeError(
                f"denoisers must be a non-empty sequence of Denoiser, got {self.denoisers!r}"
            )
        rates = tuple(self.rates) if isinstance(self.rates, list | tuple) else None
        if rates is None or len(rates) != len(denoisers):
            raise ValueError(
                f"rates must be a sequence with one rate per denoiser ({len(denoisers)}), "
                f"got {self.rates!r}"
            )
        for r in rates:
            if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
                raise TypeError(f"rates must be finite numbers, got {self.rates!r}")
            if r <= 0:
                raise ValueError(f"every rate must be > 0, got {self.rates!r}")
        if abs(sum(rates) - 1.0) > 1e-6:
            raise ValueError(f"rates must sum to 1, got {self.rates!r} (sum {sum(rates):.6g})")
        object.__setattr__(self, "denoisers", denoisers)
        object.__setattr__(self, "rates", tuple(float(r) for r in rates))

    def __len__(self) -> int:
        return len(self.denoisers)

    def sample(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Indices of ``n`` denoisers drawn independently with probabilities ``rates``."""
        n = _check_int(n, "n", 0)
        gen = _check_rng(rng)
        cdf = np.cumsum(self.rates)
        cdf[-1] = 1.0
        return np.searchsorted(cdf, gen.random(n), side="right").astype(np.int64)


# Section 3.1.2 / Table 1 of the paper: the 7 denoisers of the final UL2 objective.
# Rates: R 40% (20% each), X 40% (10% each), S 20%, as in the public seqio and PyTorch
# re-implementations (the spec marks this split VERIFY; see the README).
UL2_PAPER_MIXTURE = Mixture(
    denoisers=(
        Denoiser("R", 0.15, 3.0),
        Denoiser("R", 0.15, 8.0),
        Denoiser("X", 0.5, 3.0),
        Denoiser("X", 0.5, 8.0),
        Denoiser("X", 0.15, 64.0),
        Denoiser("X", 0.5, 64.0),
        Denoiser("S", 0.25),
    ),
    rates=(0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.2),
)
"""The paper's seven-denoiser mixture (R, X and S denoisers with its sampling rates)."""
# T5's span corruption (Raffel et al. 2020): mean span 3, 15% noise; the baseline objective.
T5_SPAN_CORRUPTION = Mixture(denoisers=(Denoiser("R", 0.15, 3.0),), rates=(1.0,))
"""Plain T5 span corruption (15% noise, mean span 3): the baseline objective."""


# -- length planning ----------------------------------------------------------------------
def _planned_lengths(tokens_length: int, density: float, mean_span: float) -> tuple[int, int, int]:
    """(noise tokens, noise spans, non-noise tokens) as random_spans_helper counts them."""
    num_noise = round(tokens_length * density)
    num_spans = round(num_noise / mean_span)
    return num_noise, num_spans, tokens_length - num_noise


def span_corruption_lengths(
    input_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """T5's length planner: ``(raw chunk length, targets length)`` such that the corrupted
    inputs (non-noise tokens, one sentinel per span, EOS) fill ``input_length`` exactly.

    Re-derives ``t5/data/preprocessors.py:random_spans_helper`` with one sentinel per span
    in inputs and targets (``extra_tokens_per_span_inputs = extra_tokens_per_span_targets
    = 1``, as ``ul2_objective`` calls it), including its rule that at density 0.5 the
    targets are made no longer than the inputs. Rounding is Python's (half to even), as in
    the reference. Raises ValueError when ``input_length`` is too short for the denoiser to
    place one span (T5 would then silently produce inputs longer than planned).
    """
    input_length = _check_int(input_length, "input_length", 2)
    density = _check_density(noise_density)
    mean_span = _check_span(mean_noise_span_length)

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise, num_spans, num_nonnoise = _planned_lengths(tokens_length, density, mean_span)
        return num_nonnoise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = input_length - 1
    while lengths(tokens_length + 1)[0] <= input_length:
        tokens_length += 1
    inputs_len, targets_len = lengths(tokens_length)
    if density == 0.5 and targets_len > inputs_len:
        tokens_length -= 1
        targets_len -= 1
    num_noise, num_spans, num_nonnoise = _planned_lengths(tokens_length, density, mean_span)
    if num_noise < 1 or num_spans < 1 or num_nonnoise < 1:
        need = max(2, math.ceil((0.5 * mean_span) / density))
        raise ValueError(
            f"input_length={input_length} is too short for span corruption with "
            f"noise_density={density:g}, mean_noise_span_length={mean_span:g}: the planned "
            f"chunk of {tokens_length} tokens holds {num_noise} noise tokens in {num_spans} "
            f"spans; at least one of each needs a chunk of about {need} tokens"
        )
    return tokens_length, targets_len


def prefix_lm_lengths(input_length: int, noise_density: float = 0.25) -> tuple[int, int]:
    """``(raw chunk length, longest targets)`` of the S denoiser for ``input_length``.

    The chunk is ``input_length - 1`` tokens (room for EOS; ``split_tokens_to_inputs_length``
    in the appendix code); the prefix is at least ``max(1, round((1 - 2r)(L - 1)))`` tokens,
    so the targets (suffix plus EOS) are at most ``L - that + 1`` tokens.
    """
    input_length = _check_int(input_length, "input_length", 3)
    density = _check_density(noise_density)
    if density > 0.5:
        raise ValueError(f"noise_density of an S denoiser must be in (0, 0.5], got {density!r}")
    raw = input_length - 1
    lo = _prefix_bounds(raw, density)[0]
    return raw, raw - lo + 1


def _prefix_bounds(length: int, density: float) -> tuple[int, int]:
    # t5/data/preprocessors.py:random_prefix_noise_mask: prefix in [min_input, L - 1].
    max_input = length - 1
    min_input = min(max_input, max(1, round((1 - 2 * density) * max_input)))
    return min_input, max_input


# -- masks ---------------------------------------------------------------------------------
def _span_counts(length: int, density: float, mean_span: float) -> tuple[int, int, int]:
    # t5/data/preprocessors.py:random_spans_noise_mask: noise tokens clipped to [1, L - 1],
    # at least one span; the length is raised to 2 "to avoid degeneracy".
    length = max(length, 2)
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span), 1)
    if num_spans > length - num_noise:
        raise ValueError(
            f"a chunk of {length} tokens at noise_density={density:g} and "
            f"mean_noise_span_length={mean_span:g} has {num_spans} noise spans but only "
            f"{length - num_noise} non-noise tokens to separate them; lower the density or "
            "raise the span length"
        )
    return num_noise, num_spans, length - num_noise


def _segment_lengths(rng: np.random.Generator, batch: int, items: int, segments: int) -> np.ndarray:
    """``[batch, segments]`` positive lengths summing to ``items``, each split uniformly:
    the split points are the positions of the ``segments - 1`` smallest random keys."""
    keys = rng.random((batch, items - 1))
    if segments == 1:
        return np.full((batch, 1), items, dtype=np.int64)
    if segments > items:
        raise ValueError(f"cannot split {items} items into {segments} non-empty segments")
    if segments - 1 == items - 1:
        return np.ones((batch, segments), dtype=np.int64)
    threshold = np.partition(keys, segments - 2, axis=1)[:, segments - 2 : segments - 1]
    # item i + 1 starts a new segment when key i is among the smallest (ties have
    # probability zero with 53-bit uniforms). nonzero on the flat array is cheaper than
    # a 2-D nonzero and returns each row's positions in order, row after row.
    flat = (keys <= threshold).reshape(-1).nonzero()[0].reshape(batch, segments - 1)
    bounds = np.empty((batch, segments + 1), dtype=np.int64)
    bounds[:, 0] = 0
    np.subtract(flat, (np.arange(batch) * (items - 1) - 1)[:, None], out=bounds[:, 1:-1])
    bounds[:, -1] = items
    return bounds[:, 1:] - bounds[:, :-1]


def random_spans_noise_mask(
    length: int,
    noise_density: float,
    mean_noise_span_length: float,
    rng: np.random.Generator | int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """T5's span mask: ``True`` marks noise.

    ``round(length * noise_density)`` noise tokens (clipped to ``[1, length - 1]``) in
    ``max(1, round(noise / mean_noise_span_length))`` spans; noise and non-noise spans
    alternate, starting with non-noise and ending with noise; subject to that, every mask
    is equally likely. Returns ``[length]`` booleans, or ``[batch_size, length]``.
    """
    length = _check_int(length, "length", 1)
    density = _check_density(noise_density)
    mean_span = _check_span(mean_noise_span_length)
    gen = _check_rng(rng)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    mask = _span_mask(gen, batch_size or 1, length, density, mean_span)
    return mask if batch_size is not None else mask[0]


def _span_mask(
    rng: np.random.Generator, batch: int, length: int, density: float, mean_span: float
) -> np.ndarray:
    noise_len, nonnoise_len = _span_lengths(rng, batch, length, density, mean_span)
    num_spans = noise_len.shape[1]
    interleaved = np.empty((batch, 2 * num_spans), dtype=np.int64)
    interleaved[:, 0::2] = nonnoise_len
    interleaved[:, 1::2] = noise_len
    # T5 marks the span starts, takes a cumulative sum and keeps the odd spans; repeating
    # the alternating pattern (non-noise, noise, ...) by the span lengths is the same mask.
    pattern = np.tile(np.array([False, True]), batch * num_spans)
    mask = np.repeat(pattern, interleaved.reshape(-1)).reshape(batch, max(length, 2))
    return mask[:, :length]


def _span_lengths(
    rng: np.random.Generator, batch: int, length: int, density: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray]:
    """The span lengths of a batch of masks: ``(noise_len, nonnoise_len)``, each
    ``[batch, num_spans]``; non-noise span s precedes noise span s."""
    num_noise, num_spans, num_nonnoise = _span_counts(length, density, mean_span)
    noise_len = _segment_lengths(rng, batch, num_noise, num_spans)
    nonnoise_len = _segment_lengths(rng, batch, num_nonnoise, num_spans)
    return noise_len, nonnoise_len


def _gather_rows(
    tokens: np.ndarray,
    starts: np.ndarray,
    first: np.ndarray,
    jump_pos: np.ndarray,
    jump: np.ndarray,
    sentinel_pos: np.ndarray,
    sentinel_ids: np.ndarray,
    lead: np.ndarray,
    lead_len: np.ndarray,
    body_len: np.ndarray,
    width: int,
    eos_id: int,
) -> np.ndarray:
    """``[B, width]`` rows: ``lead[b, :lead_len[b]]``, ``body_len[b]`` body ids, EOS, then
    unspecified ids (the callers pad or mask them).

    Body position p of row b reads ``tokens[starts[b] + first[b] + p + jumps so far]``: the
    offset grows by ``jump[b, s]`` at body position ``jump_pos[b, s]`` (a cumulative sum of a
    sparse increment array, so there is one gather for the whole batch and no boolean
    indexing); then ``sentinel_ids[s]`` is written at body position ``sentinel_pos[b, s]``.
    Positions at or past a row's body end land on its EOS or unspecified columns (or on a
    spare last column), so rows with fewer spans than the widest are
    padded with any position past their body."""
    batch, spans = sentinel_pos.shape
    total = width + 1  # the spare column takes writes past ``width``
    rows = np.arange(0, batch * total, total)
    body = (rows + lead_len)[:, None]  # flat index of each row's body position 0
    spare = (rows + width)[:, None]
    delta = np.zeros((batch, total), dtype=np.int64)
    flat = delta.reshape(-1)
    flat[np.minimum(jump_pos + body, spare)] = jump
    # written after the jumps: body position 0 reads row b's token ``first`` (no jump is
    # placed there); ``src = column + cumsum(delta)``
    flat[body[:, 0]] = starts + first - lead_len
    # torch's integer cumsum is about 3x numpy's (which is not vectorised); in place, on
    # the same memory
    torch.from_numpy(delta).cumsum_(1)
    src = delta
    src += np.arange(total)
    # the lead and EOS columns (and those past EOS) read anything in range (clip)
    out = np.take(tokens, src, mode="clip")
    out.reshape(-1)[np.minimum(sentinel_pos + body, spare)] = sentinel_ids[:spans]
    if lead.shape[1]:
        m = lead.shape[1]
        np.copyto(out[:, :m], lead, where=np.arange(m) < lead_len[:, None])
    out.reshape(-1)[rows + lead_len + body_len] = eos_id
    return out[:, :width]


def _corrupt_rows(
    tokens: np.ndarray,
    starts: np.ndarray,
    noise_len: np.ndarray,
    nonnoise_len: np.ndarray,
    num_spans: np.ndarray,
    sentinel: np.ndarray,
    sentinel_ids: np.ndarray,
    lead: np.ndarray,
    lead_len: np.ndarray,
    widths: tuple[int, int],
    eos_id: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inputs and targets of a batch of chunks, each with its own denoiser, in one pass.

    Row b is the chunk ``tokens[starts[b]:]`` laid out as non-noise span 0, noise span 0,
    non-noise span 1, ... with ``[B, S]`` span lengths (zero past the row's ``num_spans``).
    Span denoisers (``sentinel[b]`` true): inputs = lead, non-noise span s then sentinel s
    for every s, EOS; targets = sentinel s then noise span s, EOS, equal to
    ``noise_span_to_unique_sentinel`` / ``nonnoise_span_to_unique_sentinel`` of the span
    mask plus the appendix's prompt and EOS (the mask is never built). The S denoiser is the
    same layout with one span and no sentinels: inputs = lead, prefix, EOS; targets =
    suffix, EOS. Returns ``(inputs [B, widths[0]], input lengths, targets [B, widths[1]],
    target lengths)``; the columns past a row's length are unspecified.

    Body position p of span s reads token ``p + offset_s``: for the inputs ``offset_s =
    (noise tokens before span s) - s``, for the targets ``(non-noise tokens up to span s)
    - s - 1`` (without sentinels, ``- 1`` and ``- s`` drop out)."""
    spans = noise_len.shape[1]
    with_sentinels = num_spans * sentinel
    if int(with_sentinels.max(initial=0)) > sentinel_ids.size:
        raise ValueError(
            f"{int(with_sentinels.max())} noise spans need {int(with_sentinels.max())} "
            f"sentinels but only {sentinel_ids.size} are given"
        )
    # the padded spans' sentinel writes go to the spare column: any id will do
    sent_ids = np.zeros(max(spans, sentinel_ids.size), dtype=np.int64)
    sent_ids[: sentinel_ids.size] = sentinel_ids
    arange = np.arange(spans)
    n_noise = noise_len.sum(axis=1)
    n_nonnoise = nonnoise_len.sum(axis=1)
    in_len = lead_len + n_nonnoise + with_sentinels + 1
    t_len = n_noise + with_sentinels + 1
    too_long = (in_len > widths[0]) | (t_len > widths[1])
    if too_long.any():
        b = int(np.flatnonzero(too_long)[0])
        raise ValueError(
            f"example {b} gives {int(in_len[b])} inputs / {int(t_len[b])} targets, more than "
            f"{widths[0]} / {widths[1]}"
        )
    no_write = np.full_like(noise_len, np.iinfo(np.int64).max // 4)
    # inputs: sentinel s sits after the non-noise tokens of spans 0..s and s sentinels
    in_sent = np.cumsum(nonnoise_len, axis=1)
    in_sent += arange
    inputs = _gather_rows(
        tokens,
        starts,
        np.zeros_like(starts),
        in_sent[:, :-1] + 1,
        noise_len[:, :-1] - 1,
        np.where(sentinel[:, None] > 0, in_sent, no_write),
        sent_ids,
        lead,
        lead_len,
        in_len - lead_len - 1,
        widths[0],
        eos_id,
    )
    # targets: sentinel s sits after the noise tokens of spans 0..s-1 and s sentinels
    t_sent = np.cumsum(noise_len, axis=1)
    t_sent -= noise_len
    t_sent += arange
    targets = _gather_rows(
        tokens,
        starts,
        nonnoise_len[:, 0] - sentinel,
        t_sent[:, 1:],
        nonnoise_len[:, 1:] - 1,
        np.where(sentinel[:, None] > 0, t_sent, no_write),
        sent_ids,
        lead[:, :0],
        np.zeros_like(lead_len),
        t_len - 1,
        widths[1],
        eos_id,
    )
    return inputs, in_len, targets, t_len


def random_prefix_noise_mask(
    length: int,
    noise_density: float = 0.25,
    rng: np.random.Generator | int | None = None,
    batch_size: int | None = None,
) -> np.ndarray:
    """The S denoiser's mask: ``True`` marks the *prefix* (the inputs), as in T5's
    ``random_prefix_noise_mask``; its length is uniform in
    ``[max(1, round((1 - 2r)(L - 1))), L - 1]``, so the suffix averages a fraction r."""
    length = _check_int(length, "length", 2)
    density = _check_density(noise_density)
    if density > 0.5:
        raise ValueError(f"noise_density must be in (0, 0.5] for a prefix mask, got {density!r}")
    gen = _check_rng(rng)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    prefix = _prefix_lengths(gen, batch_size or 1, length, density)
    mask = np.arange(length)[None, :] < prefix[:, None]
    return mask if batch_size is not None else mask[0]


def _prefix_lengths(
    rng: np.random.Generator, batch: int, length: int, density: float
) -> np.ndarray:
    lo, hi = _prefix_bounds(length, density)
    return rng.integers(lo, hi, size=batch, endpoint=True)


# -- sentinels -----------------------------------------------------------------------------
def noise_span_to_unique_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, sentinel_ids: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Replace each run of noise tokens by the next sentinel (``sentinel_ids[0]`` for the
    first run, ...) and drop the rest of the run; T5's ``noise_span_to_unique_sentinel``.

    ``tokens`` and ``noise_mask`` are ``[L]`` or ``[B, L]``; in a batch every row must keep
    the same number of tokens (true for masks of one denoiser and length).
    """
    tokens = np.asarray(tokens)
    mask = np.asarray(noise_mask)
    if tokens.ndim not in (1, 2) or not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(
            f"tokens must be a 1-D or 2-D integer array, got {tokens.dtype} {tokens.shape}"
        )
    if mask.shape != tokens.shape or mask.dtype != np.bool_:
        raise ValueError(
            f"noise_mask must be a boolean array of the tokens' shape {tokens.shape}, got "
            f"{mask.dtype} {mask.shape}"
        )
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    if sentinels.ndim != 1:
        raise TypeError(f"sentinel_ids must be a 1-D sequence of ints, got shape {sentinels.shape}")
    squeeze = tokens.ndim == 1
    tok2 = tokens[None] if squeeze else tokens
    mask2 = mask[None] if squeeze else mask
    prev = np.zeros_like(mask2)
    prev[:, 1:] = mask2[:, :-1]
    first = mask2 & ~prev
    n_spans = first.sum(axis=1)
    if n_spans.size and int(n_spans.max()) > sentinels.size:
        raise ValueError(
            f"the mask has {int(n_spans.max())} noise spans but only {sentinels.size} "
            "sentinel ids were given; add sentinel tokens to the tokenizer"
        )
    keep = ~(mask2 & prev)
    kept = keep.sum(axis=1)
    if kept.size and not np.all(kept == kept[0]):
        raise ValueError("every row of a batch must keep the same number of tokens")
    span_index = np.cumsum(first, axis=1) - 1
    table = sentinels if sentinels.size else np.zeros(1, dtype=np.int64)
    out = np.where(first, table[np.clip(span_index, 0, table.size - 1)], tok2)
    out = out[keep].reshape(tok2.shape[0], -1).astype(tokens.dtype, copy=False)
    return out[0] if squeeze else out


def nonnoise_span_to_unique_sentinel(
    tokens: np.ndarray, noise_mask: np.ndarray, sentinel_ids: Sequence[int] | np.ndarray
) -> np.ndarray:
    """The targets: each run of non-noise tokens becomes a sentinel (T5's
    ``nonnoise_span_to_unique_sentinel``)."""
    return noise_span_to_unique_sentinel(tokens, ~np.asarray(noise_mask, dtype=bool), sentinel_ids)
