"""Pack formatted documents into fixed-length rows without cross-document attention.

The reference packs with ``--strategy pack_complete`` into 8192-token rows, records each
document's ``(start, end)`` in ``indices`` and trains with varlen flash attention
(``return_indices: true`` in ``princeton-pli/MeCo:run_configs/*.yaml``), so a token never
attends to another document, in the baseline as well as in MeCo. Here each row carries:

- ``position_ids`` restarting at 0 in every segment (transformers >= 4.53.1 detects the
  restarts and builds the block-diagonal mask for SDPA / eager / FlexAttention / flash varlen;
  up to 4.53.0 it silently let documents attend to each other: 0.25 max logit difference on
  a tiny Llama, measured on 4.45.2, 4.52.4 and 4.53.0, below 1e-7 on 4.53.1);
- ``segment_ids`` from which :func:`block_causal_mask` builds an explicit 4-D mask;
- ``labels`` with -100 at the first token of every segment, so no position is trained to
  predict the start of the *next* document: a packed forward then scores exactly what
  separate forwards of the documents score.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trainforge_meco.formatting import IGNORE_INDEX, MeCoExample

Strategy = Literal["complete", "split", "pad"]
LongDocuments = Literal["error", "truncate", "split"]
STRATEGIES: tuple[str, ...] = ("complete", "split", "pad")
LONG_DOCUMENTS: tuple[str, ...] = ("error", "truncate", "split")
# princeton-pli/MeCo:data.py: "If the mask is all 0 we might get nan loss" -> labels[-10:] restored.
ALL_MASKED_RESTORE = 10
# The first transformers whose causal LMs turn restarting position_ids into a block-diagonal
# mask (measured: 4.53.0 leaks across documents, 4.53.1 does not). The package's floor.
POSITION_IDS_ISOLATION_MIN = (4, 53, 1)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
        if digits != piece:  # "0rc1", "dev0": stop at the pre-release tag
            break
    return tuple(parts)


@functools.cache
def _installed_transformers() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def _check_position_ids_isolation(version: str | None = None) -> None:
    """Refuse ``attention="position_ids"`` where transformers would ignore the restarts."""
    if version is None:
        version = _installed_transformers()
        if version is None:
            return  # no transformers: the caller's own model decides
    if _version_tuple(version) < POSITION_IDS_ISOLATION_MIN:
        floor = ".".join(map(str, POSITION_IDS_ISOLATION_MIN))
        raise RuntimeError(
            f"transformers {version} does not isolate packed documents from restarting "
            f"position_ids (documents would attend to each other); upgrade to "
            f"transformers>={floor} or use attention='mask' (an explicit block-causal mask)"
        )


@dataclass
class PackedSequences:
    """Packed rows ``[N, seq_len]``. ``document_ids`` is the index of the source example at
    each position (-1 on padding); ``segment_ids`` numbers the contiguous pieces of a row
    (-1 on padding); ``boundaries[i]`` lists row ``i``'s ``(start, end)`` segments, like the
    reference's ``indices``; ``fallback_rows`` are rows whose labels were all -100 and got
    the reference's fallback."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    document_ids: torch.Tensor
    boundaries: list[list[tuple[int, int]]]
    fallback_rows: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One row as a dict (what a map-style dataset yields to :class:`MeCoCollator`)."""
        return {
            "input_ids": self.input_ids[index],
            "labels": self.labels[index],
            "position_ids": self.position_ids[index],
            "segment_ids": self.segment_ids[index],
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return (self[i] for i in range(len(self)))

    def attention_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The block-diagonal causal mask ``[N, 1, L, L]`` (see :func:`block_causal_mask`)."""
        return block_causal_mask(self.segment_ids, dtype)

    def model_inputs(
        self,
        attention: Literal["position_ids", "mask"] = "position_ids",
        mask_dtype: torch.dtype = torch.float32,
    ) -> dict[str, Any]:
        """Keyword arguments for a transformers causal LM: ``input_ids``, ``labels``,
        ``position_ids``, ``use_cache=False`` and, with ``attention="mask"``, a 4-D
        ``attention_mask``."""
        return _model_inputs(
            self.input_ids, self.labels, self.position_ids, self.segment_ids, attention, mask_dtype
        )


def _model_inputs(
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    position_ids: torch.Tensor,
    segment_ids: torch.Tensor,
    attention: str,
    mask_dtype: torch.dtype,
) -> dict[str, Any]:
    if attention not in ("position_ids", "mask"):
        raise ValueError(f"attention must be 'position_ids' or 'mask', got {attention!r}")
    if attention == "position_ids":
        _check_position_ids_isolation()
    # use_cache=False: transformers builds the packed (block-diagonal) mask from restarting
    # position ids only when no KV cache is passed or created.
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": labels,
        "position_ids": position_ids,
        "use_cache": False,
    }
    if attention == "mask":
        out["attention_mask"] = block_causal_mask(segment_ids, mask_dtype)
    return out


def block_causal_mask(
    segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``[N, 1, L, L]`` mask: query ``q`` sees key ``k`` iff ``k <= q`` in the same segment.

    ``segment_ids`` ``[N, L]`` (or ``[L]``); -1 marks padding, which sees only itself (so no
    softmax row is empty). ``dtype=torch.bool`` gives True = attend (SDPA, FlexAttention);
    a floating dtype gives an additive mask, 0 or the dtype's minimum (eager and SDPA).
    """
    if not isinstance(segment_ids, torch.Tensor) or segment_ids.dtype.is_floating_point:
        raise TypeError("segment_ids must be an integer tensor")
    if segment_ids.dim() == 1:
        segment_ids = segment_ids.unsqueeze(0)
    if segment_ids.dim() != 2:
        raise ValueError(f"segment_ids must be [N, L] or [L], got shape {tuple(segment_ids.shape)}")
    if dtype != torch.bool and not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.bool or a floating dtype, got {dtype}")
    length = segment_ids.shape[1]
    idx = torch.arange(length, device=segment_ids.device)
    causal = idx[None, :] <= idx[:, None]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    real = (segment_ids >= 0)[:, :, None]
    allowed = (same & causal[None] & real) | torch.eye(
        length, dtype=torch.bool, device=segment_ids.device
    )[None]
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    out = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return out.masked_fill(~allowed, torch.finfo(dtype).min)


def _example_pair(example: Any, index: int) -> tuple[list[int], list[int]]:
    if isinstance(example, Mapping):
        if "input_ids" not in example:
            raise TypeError(f"example {index} is a mapping without 'input_ids'")
        ids, labels = example["input_ids"], example.get("labels", example["input_ids"])
    elif isinstance(example, MeCoExample | tuple) and len(example) == 2:
        ids, labels = example
    else:
        raise TypeError(
            f"example {index} must be a MeCoExample, an (input_ids, labels) pair or a mapping "
            f"with 'input_ids', got {type(example).__name__}"
        )
    ids_l = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    lab_l = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)
    if len(ids_l) != len(lab_l):
        raise ValueError(f"example {index}: {len(ids_l)} input_ids but {len(lab_l)} labels")
    if not ids_l:
        raise ValueError(f"example {index} is empty")
    return [int(i) for i in ids_l], [int(i) for i in lab_l]


def pack_documents(
    examples: Iterable[Any],
    seq_len: int,
    strategy: Strategy = "complete",
    *,
    long_documents: LongDocuments = "error",
    pad_id: int = 0,
    drop_last: bool = False,
    restore_last: int = ALL_MASKED_RESTORE,
) -> PackedSequences:
    """Pack formatted examples into rows of ``seq_len`` tokens.

    Args:
        examples: :class:`MeCoExample` s, ``(input_ids, labels)`` pairs, or mappings with
            ``input_ids`` (and ``labels``; missing labels = the ids).
        strategy: what happens to an example that does not fit in the rest of the current row:
            ``"complete"`` (the reference's ``pack_complete``): fill the row with its head and
            discard the rest; ``"split"`` (the reference's ``pack``): continue the rest in the
            next row(s); ``"pad"``: pad the row and start the example in a new one (no token
            is lost).
        long_documents: an example longer than ``seq_len``: ``"error"`` (default) raises,
            ``"truncate"`` keeps its first ``seq_len`` tokens, ``"split"`` cuts it into pieces
            of ``seq_len`` tokens placed as separate examples (only the first piece carries the
            metadata; each piece's first token has no label).
        pad_id: id written at padding positions (label -100).
        drop_last: drop a final partially filled row instead of padding it.
        restore_last: when a row has no labelled position at all (a window holding only BOS and
            metadata), the labels of its last ``restore_last`` non-initial positions are
            restored to the ids, as ``princeton-pli/MeCo:data.py`` does to avoid a NaN loss; 0
            turns the fallback off.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if long_documents not in LONG_DOCUMENTS:
        raise ValueError(f"long_documents must be one of {LONG_DOCUMENTS}, got {long_documents!r}")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise ValueError(f"pad_id must be a non-negative integer, got {pad_id!r}")
    if isinstance(restore_last, bool) or not isinstance(restore_last, int) or restore_last < 0:
        raise ValueError(f"restore_last must be a non-negative integer, got {restore_last!r}")
    if isinstance(examples, str | bytes | Mapping) or not isinstance(examples, Iterable):
        raise TypeError(f"examples must be an iterable of examples, got {type(examples).__name__}")

    rows: list[dict[str, list[int]]] = []
    bounds: list[list[tuple[int, int]]] = []
    cur: dict[str, list[int]] = {"ids": [], "labels": [], "pos": [], "seg": [], "doc": []}
    cur_bounds: list[tuple[int, int]] = []

    def flush() -> None:
        nonlocal cur, cur_bounds
        if cur["ids"]:
            rows.append(cur)
            bounds.append(cur_bounds)
        cur = {"ids": [], "labels": [], "pos": [], "seg": [], "doc": []}
        cur_bounds = []

    def pad_and_flush() -> None:
        n_pad = seq_len - len(cur["ids"])
        cur["ids"] += [pad_id] * n_pad
        cur["labels"] += [IGNORE_INDEX] * n_pad
        cur["pos"] += list(range(n_pad))
        cur["seg"] += [-1] * n_pad
        cur["doc"] += [-1] * n_pad
        flush()

    def place(ids: list[int], labels: list[int], doc: int) -> None:
        start = len(cur["ids"])
        seg = len(cur_bounds)
        cur["ids"] += ids
        cur["labels"] += [IGNORE_INDEX, *labels[1:]]  # no prediction across a segment start
        cur["pos"] += list(range(len(ids)))
        cur["seg"] += [seg] * len(ids)
        cur["doc"] += [doc] * len(ids)
        cur_bounds.append((start, start + len(ids)))

    count = 0
    for doc, example in enumerate(examples):
        count += 1
        ids, labels = _example_pair(example, doc)
        if len(ids) > seq_len:
            if long_documents == "error":
                raise ValueError(
                    f"example {doc} has {len(ids)} tokens > seq_len={seq_len}; pass "
                    "long_documents='truncate' or 'split', or chunk documents before formatting"
                )
            if long_documents == "truncate":
                pieces = [(ids[:seq_len], labels[:seq_len])]
            else:
                pieces = [
                    (ids[i : i + seq_len], labels[i : i + seq_len])
                    for i in range(0, len(ids), seq_len)
                ]
        else:
            pieces = [(ids, labels)]
        for p_ids, p_labels in pieces:
            while p_ids:
                room = seq_len - len(cur["ids"])
                if len(p_ids) <= room:
                    place(p_ids, p_labels, doc)
                    p_ids = []
                elif strategy == "pad":
                    pad_and_flush()
                elif strategy == "complete":
                    place(p_ids[:room], p_labels[:room], doc)
                    p_ids = []
                else:  # split
                    place(p_ids[:room], p_labels[:room], doc)
                    p_ids, p_labels = p_ids[room:], p_labels[room:]
                if len(cur["ids"]) == seq_len:
                    flush()
    if count == 0:
        raise ValueError("examples is empty: nothing to pack")
    if cur["ids"] and not drop_last:
        pad_and_flush()
    if not rows:
        raise ValueError(f"no full row of seq_len={seq_len} tokens (drop_last=True dropped it)")

    input_ids = torch.tensor([r["ids"] for r in rows], dtype=torch.long)
    labels_t = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
    segment_ids = torch.tensor([r["seg"] for r in rows], dtype=torch.long)
    fallback = []
    if restore_last:
        for i in range(len(rows)):
            if bool((labels_t[i] == IGNORE_INDEX).all()):
                restore_all_masked(labels_t[i], input_ids[i], segment_ids[i], restore_last)
                fallback.append(i)
    return PackedSequences(
        input_ids=input_ids,
        labels=labels_t,
        position_ids=torch.tensor([r["pos"] for r in rows], dtype=torch.long),
        segment_ids=segment_ids,
        document_ids=torch.tensor([r["doc"] for r in rows], dtype=torch.long),
        boundaries=bounds,
        fallback_rows=fallback,
    )


def restore_all_masked(
    labels: torch.Tensor,
    input_ids: torch.Tensor,
    segment_ids: torch.Tensor | None = None,
    n: int = ALL_MASKED_RESTORE,
) -> torch.Tensor:
    """The reference's fallback for a window whose labels are all -100: set the labels of
    the last ``n`` real (non-padding, non-segment-start) positions to their ids, in place.
    Returns ``labels``."""
    if labels.shape != input_ids.shape or labels.dim() != 1:
        raise ValueError("labels and input_ids must be 1-D tensors of the same length")
    if segment_ids is None:
        segment_ids = torch.zeros_like(labels)
    starts = torch.ones_like(labels, dtype=torch.bool)
    starts[1:] = segment_ids[1:] != segment_ids[:-1]
    candidates = ((segment_ids >= 0) & ~starts).nonzero().flatten()[-n:]
    labels[candidates] = input_ids[candidates]
    return labels


class MeCoCollator:
    """Batch packed rows or unpacked examples for a transformers causal LM / HF ``Trainer``.

    - Packed rows (dicts with ``input_ids``, ``labels``, ``position_ids``, ``segment_ids``, as
      :class:`PackedSequences` yields) are stacked. ``attention="position_ids"`` (default)
      returns position ids only: transformers detects the restarts and masks across
      documents (and flash-attention varlen uses them directly); ``attention="mask"`` adds an
      explicit 4-D block-causal ``attention_mask`` of ``mask_dtype``.
    - Unpacked examples (:class:`MeCoExample` or dicts without ``segment_ids``) of different
      lengths are right-padded with ``pad_id``: labels -100 and a 2-D ``attention_mask``.
    """

    def __init__(
        self,
        pad_id: int = 0,
        attention: Literal["position_ids", "mask"] = "position_ids",
        mask_dtype: torch.dtype = torch.float32,
    ) -> None:
        if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
            raise ValueError(f"pad_id must be a non-negative integer, got {pad_id!r}")
        if attention not in ("position_ids", "mask"):
            raise ValueError(f"attention must be 'position_ids' or 'mask', got {attention!r}")
        if attention == "position_ids":
            _check_position_ids_isolation()
        self.pad_id, self.attention, self.mask_dtype = pad_id, attention, mask_dtype

    def __call__(self, features: Sequence[Any]) -> dict[str, Any]:
        if isinstance(features, str | bytes | Mapping) or not isinstance(features, Sequence):
            raise TypeError(
                f"features must be a sequence of examples, got {type(features).__name__}"
            )
        if not features:
            raise ValueError("features is empty")
        if all(isinstance(f, Mapping) and "segment_ids" in f for f in features):
            stacked = {
                k: torch.stack([torch.as_tensor(f[k]) for f in features])
                for k in ("input_ids", "labels", "position_ids", "segment_ids")
            }
            return _model_inputs(
                stacked["input_ids"],
                stacked["labels"],
                stacked["position_ids"],
                stacked["segment_ids"],
                self.attention,
                self.mask_dtype,
            )
        pairs = [_example_pair(f, i) for i, f in enumerate(features)]
        width = max(len(ids) for ids, _ in pairs)
        input_ids = torch.full((len(pairs), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
        for i, (ids, labs) in enumerate(pairs):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            labels[i, : len(ids)] = torch.tensor(labs)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
