"""Differentiable N:M layer masks (TinyFusion's learnable depth gates).

Following ``VainF/TinyFusion:models_with_layer_pruning.py`` (``DiT.__init__`` / ``DiT.forward``):
the L layers are split into consecutive groups; group g keeps N_g of its M_g layers. Every
keep-pattern of a group is a row of ``options`` (C(M, N) rows, N ones each); the group owns
logits phi_g (one per option, initialised to the constant 0.02). Each forward samples, per
sample, a straight-through one-hot ``y = gumbel_softmax(scaling * phi_g, tau, hard=True)`` and
the layer mask ``m = y @ options``; block j then computes ``x <- m_j * block_j(x) + (1 - m_j) x``
(a skipped block is the identity).

:class:`GatedDepth` installs this on an existing model with forward hooks on its blocks, so the
model's own loop, signatures and ``state_dict`` keys stay as they are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from trainforge_tinyfusion.layouts import find_blocks

Groups = list[tuple[int, int]]


def make_groups(
    depth: int, keep: int | None = None, block: int | None = None, groups: Any = None
) -> Groups:
    """The ``[(N, M), ...]`` groups covering ``depth`` layers.

    Either ``keep`` of every ``block`` consecutive layers (``keep=1, block=2`` is the paper's
    1:2), or explicit ``groups`` (mixed groups such as ``[[2, 4], [3, 4]]`` are allowed).
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    if groups is not None:
        if keep is not None or block is not None:
            raise ValueError("pass either groups=... or keep=/block=, not both")
        try:
            out = [(int(n), int(m)) for n, m in groups]
        except (TypeError, ValueError) as exc:
            raise TypeError(f"groups must be a sequence of (N, M) pairs, got {groups!r}") from exc
    else:
        for name, value in (("keep", keep), ("block", block)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        assert keep is not None and block is not None  # for the type checker; checked above
        if depth % block:
            raise ValueError(
                f"block={block} does not divide the depth {depth}; choose a block size that "
                f"divides it or pass explicit groups=[[N, M], ...] summing M to {depth}"
            )
        out = [(keep, block)] * (depth // block)
    if not out:
        raise ValueError("groups is empty")
    for n, m in out:
        if m <= 0 or n <= 0 or n > m:
            raise ValueError(f"group ({n}, {m}) is invalid: need 1 <= N <= M")
    total = sum(m for _, m in out)
    if total != depth:
        raise ValueError(f"groups {out} cover {total} layers but the stack has {depth}")
    if all(n == m for n, m in out):
        raise ValueError(f"groups {out} keep every layer: nothing to prune")
    return out


def make_options(n: int, m: int) -> torch.Tensor:
    """All C(m, n) keep-masks of a group, one per row, in ``itertools.combinations`` order
    (as ``generate_binary_tensor`` in ``VainF/TinyFusion:models_with_layer_pruning.py``)."""
    if not (isinstance(n, int) and isinstance(m, int)) or not 1 <= n <= m:
        raise ValueError(f"need ints with 1 <= n <= m, got n={n!r}, m={m!r}")
    combos = list(itertools.combinations(range(m), n))
    out = torch.zeros(len(combos), m)
    for row, idx in enumerate(combos):
        out[row, list(idx)] = 1.0
    return out


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class GatedDepth(nn.Module):
    """Learnable N:M depth gates attached to a model's block stack by hooks.

    ``gumbel_gates[g]`` holds the logits of group g (shape ``(C_g,)``). Modes:
    ``"sample"`` (training: a fresh per-sample straight-through Gumbel mask each forward),
    ``"categorical"`` (a fresh per-sample hard mask drawn from ``softmax(scaling * logits)``,
    the same distribution, with no gradient path to the logits; the draws of the last forward
    are in :attr:`last_choices`, see :meth:`log_prob`; used by the score-function estimator),
    ``"decision"`` (the argmax option of each group for every sample) and ``"off"`` (every
    block runs, the hooks do nothing). ``tau`` and ``scaling`` are plain attributes, annealed
    by the caller (:class:`LinearAnneal`).

    The gate module is *not* registered inside the model, so the model's ``state_dict`` keeps
    its keys; save the gates with ``gated.state_dict()``. :meth:`remove` detaches the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[tuple[int, int]],
        *,
        blocks: str | None = None,
        tau: float = 4.0,
        scaling: float = 100.0,
        per_sample: bool = True,
        init: float = 0.02,
    ) -> None:
        super().__init__()
        self.path, stack = find_blocks(model, blocks)
        self.groups = make_groups(len(stack), groups=groups)
        self.tau = _check_positive("tau", tau)
        self.scaling = _check_positive("scaling", scaling)
        if not isinstance(per_sample, bool):
            raise TypeError(f"per_sample must be a bool, got {per_sample!r}")
        self.per_sample = per_sample
        options = [make_options(n, m) for n, m in self.groups]
        for i, opt in enumerate(options):
            self.register_buffer(f"options_{i}", opt, persistent=False)
        # VainF/TinyFusion:models_with_layer_pruning.py: logits initialised to the constant 0.02.
        self.gumbel_gates = nn.ParameterList(
            [nn.Parameter(torch.full((o.shape[0],), float(init))) for o in options]
        )
        self.mode = "sample"
        self.generator: torch.Generator | None = None  # for the "categorical" draws
        self.last_choices: torch.Tensor | None = None  # (rows, groups) of the last draw
        self._mask: torch.Tensor | None = None  # (batch, depth) of the current forward
        self._inputs: dict[int, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self.depth = len(stack)
        for j, block in enumerate(stack):
            self._handles.append(
                block.register_forward_pre_hook(self._pre_hook(j), with_kwargs=True)
            )
            self._handles.append(block.register_forward_hook(self._post_hook(j)))

    @property
    def options(self) -> list[torch.Tensor]:
        return [getattr(self, f"options_{i}") for i in range(len(self.groups))]

    # ------------------------------------------------------------------ masks
    def sample_mask(self, batch: int) -> torch.Tensor:
        """A ``(batch, depth)`` straight-through mask (one Gumbel draw per sample and group
        when ``per_sample``, else one draw shared by the batch)."""
        rows = batch if self.per_sample else 1
        parts = []
        for logits, opt in zip(self.gumbel_gates, self.options, strict=True):
            y = F.gumbel_softmax(
                logits.unsqueeze(0).expand(rows, -1) * self.scaling, tau=self.tau, hard=True, dim=1
            )
            parts.append(y @ opt.to(y.dtype))
        mask = torch.cat(parts, dim=1)
        return mask.expand(batch, -1) if rows != batch else mask

    def sample_choices(self, batch: int) -> torch.Tensor:
        """``(rows, groups)`` option indices drawn from ``softmax(scaling * logits)`` of every
        group (``rows = batch`` when ``per_sample``, else 1), using :attr:`generator` if set.

        This is the distribution of the forward masks of ``"sample"`` mode: the argmax of
        ``(scaling * logits + gumbel) / tau`` does not depend on ``tau``, only the
        straight-through gradient does."""
        rows = batch if self.per_sample else 1
        cols = []
        for logits in self.gumbel_gates:
            probs = torch.softmax(logits.detach().float() * self.scaling, 0)
            cols.append(torch.multinomial(probs, rows, replacement=True, generator=self.generator))
        return torch.stack(cols, dim=1)

    def choices_mask(self, choices: torch.Tensor) -> torch.Tensor:
        """The ``(rows, depth)`` 0/1 layer mask of ``(rows, groups)`` option indices."""
        if choices.dim() != 2 or choices.shape[1] != len(self.groups):
            raise ValueError(
                f"choices must have shape (rows, {len(self.groups)}), got {tuple(choices.shape)}"
            )
        return torch.cat([opt[choices[:, g]] for g, opt in enumerate(self.options)], dim=1)

    def log_prob(self, choices: torch.Tensor) -> torch.Tensor:
        """``(rows,)`` log-probability of ``(rows, groups)`` option indices under
        ``softmax(scaling * logits)`` (summed over groups), differentiable in the logits."""
        if choices.dim() != 2 or choices.shape[1] != len(self.groups):
            raise ValueError(
                f"choices must have shape (rows, {len(self.groups)}), got {tuple(choices.shape)}"
            )
        out = torch.zeros(choices.shape[0], device=choices.device)
        for g, logits in enumerate(self.gumbel_gates):
            out = out + torch.log_softmax(logits * self.scaling, 0)[choices[:, g]]
        return out

    def decision_mask(self) -> torch.Tensor:
        """The ``(depth,)`` 0/1 mask of the argmax option of every group."""
        return torch.cat(
            [
                opt[int(logits.argmax())]
                for logits, opt in zip(self.gumbel_gates, self.options, strict=True)
            ]
        )

    def decisions(self, logits: Sequence[torch.Tensor] | None = None) -> list[int]:
        """Indices of the kept layers: the argmax option of every group, as the reference's
        ``Decision`` printout (``VainF/TinyFusion:prune_by_learning.py``). ``logits`` (e.g. an
        EMA of the gates) replaces the live gates."""
        logits = list(self.gumbel_gates) if logits is None else list(logits)
        kept: list[int] = []
        offset = 0
        for g, opt in zip(logits, self.options, strict=True):
            row = opt[int(torch.as_tensor(g).argmax())]
            kept += [offset + int(i) for i in row.nonzero().flatten()]
            offset += opt.shape[1]
        return kept

    def confidence(self, logits: Sequence[torch.Tensor] | None = None) -> list[float]:
        """Per group, the largest probability of ``softmax(scaling * logits)`` (the reference's
        ``Confidence`` printout)."""
        logits = list(self.gumbel_gates) if logits is None else list(logits)
        return [
            float(torch.softmax(torch.as_tensor(g).detach() * self.scaling, 0).max())
            for g in logits
        ]

    # ------------------------------------------------------------------ hooks
    def _pre_hook(self, j: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if self.mode == "off":
                return None
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"GatedDepth: block {j} was called without a tensor as its first argument "
                    "(or hidden_states=/x=); this layout is not supported"
                )
            if j == 0 or self._mask is None or self._mask.shape[0] != x.shape[0]:
                batch = x.shape[0]
                if self.mode == "sample":
                    self._mask = self.sample_mask(batch)
                elif self.mode == "categorical":
                    self.last_choices = self.sample_choices(batch)
                    mask = self.choices_mask(self.last_choices).to(x.dtype)
                    self._mask = mask.expand(batch, -1) if mask.shape[0] != batch else mask
                else:
                    self._mask = self.decision_mask().to(x.dtype).unsqueeze(0).expand(batch, -1)
            self._inputs[j] = x
            return None

        return hook

    def _post_hook(self, j: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            if self.mode == "off":
                return None
            x = self._inputs.pop(j)
            assert self._mask is not None  # set by the pre-hook of this very call
            out = output[0] if isinstance(output, tuple) else output
            m = self._mask[:, j].to(out.dtype).reshape(-1, *([1] * (out.dim() - 1)))
            mixed = out * m + x * (1 - m)
            if isinstance(output, tuple):
                return (mixed, *output[1:])
            return mixed

        return hook

    def set_mode(self, mode: str) -> None:
        if mode not in ("sample", "categorical", "decision", "off"):
            raise ValueError(
                f"mode must be 'sample', 'categorical', 'decision' or 'off', got {mode!r}"
            )
        self.mode = mode
        self._mask = None

    def remove(self) -> None:
        """Detach the hooks: the model runs every block again."""
        for h in self._handles:
            h.remove()
        self._handles.clear()


class LinearAnneal:
    """Linear schedule ``start -> end`` over ``total_steps`` for ``tau`` and ``scaling``:
    ``value(step) = start + (end - start) * step / max(total_steps - 1, 1)``, as
    ``VainF/TinyFusion:prune_by_learning.py`` (``--tau-range 4 0.1``, ``--scaling-range 1e2 1e2``).
    """

    def __init__(
        self, start: float = 4.0, end: float = 0.1, total_steps: int = 1, attr: str = "tau"
    ) -> None:
        _check_positive("start", start)
        _check_positive("end", end)
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
        if attr not in ("tau", "scaling"):
            raise ValueError(f"attr must be 'tau' or 'scaling', got {attr!r}")
        self.start, self.end, self.total_steps, self.attr = (
            float(start),
            float(end),
            total_steps,
            attr,
        )

    def value(self, step: int) -> float:
        frac = min(max(step, 0), self.total_steps - 1) / max(self.total_steps - 1, 1)
        return self.start + (self.end - self.start) * frac

    def __call__(self, gates: GatedDepth, step: int) -> float:
        v = self.value(step)
        setattr(gates, self.attr, v)
        return v
