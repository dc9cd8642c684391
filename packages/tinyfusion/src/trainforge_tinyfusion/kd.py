"""Masked knowledge distillation for recovery (``VainF/TinyFusion:train_masked_kd.py`` and
``diffusion/gaussian_diffusion.py`` ``training_losses_kd_rep``).

loss = alpha_kd * KD + (1 - alpha_kd) * GT + beta_feat * FEAT, with

* KD: mean squared difference of student and teacher outputs (the reference adds a VLB-KD term
  when the DiT learns its variance; pass it in ``kd_extra``);
* GT: the student's own training loss;
* FEAT: for every (student block i, teacher block t_i) pair,
  ``mean((m_s * h_s - m_t * h_t) ** 2)`` with ``m = |h - mean| < k_sigma * std``, mean and
  (unbiased) std taken per sample over tokens x channels: activations more than 2 std from
  their sample's mean (the "massive activations") are left out of the feature loss;
* beta_feat = beta0 * (1 - epoch / (epochs - 1)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from trainforge_tinyfusion.layouts import find_blocks

logger = logging.getLogger(__name__)


def uniform_layer_pairs(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """Student block i <-> teacher block ``(i + 1) * L_t / L_s - 1``: the reference's pairing
    (``train_masked_kd.py``: D14 from 28 layers and D7 from 14 both pair i with 2i + 1)."""
    for name, v in (("student_depth", student_depth), ("teacher_depth", teacher_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if teacher_depth % student_depth:
        raise ValueError(
            f"student_depth={student_depth} must divide teacher_depth={teacher_depth} for a "
            "uniform pairing; pass layer_pairs explicitly otherwise"
        )
    r = teacher_depth // student_depth
    return [(i, (i + 1) * r - 1) for i in range(student_depth)]


def massive_activation_mask(h: torch.Tensor, k_sigma: float = 2.0) -> torch.Tensor:
    """``|h - mean| < k_sigma * std`` with mean and unbiased std per sample over all other dims."""
    if not isinstance(h, torch.Tensor) or h.dim() < 2:
        raise ValueError(
            "h must be a tensor with a batch dimension and at least one more, "
            f"got {getattr(h, 'shape', h)!r}"
        )
    if (
        isinstance(k_sigma, bool)
        or not isinstance(k_sigma, int | float)
        or not math.isfinite(k_sigma)
        or k_sigma <= 0
    ):
        raise ValueError(f"k_sigma must be a finite number > 0, got {k_sigma!r}")
    dims = list(range(1, h.dim()))
    var, mean = torch.var_mean(
        h, dim=dims, keepdim=True
    )  # th.var_mean(feature, dim=[1,2]) in the reference
    return (h - mean).abs() < k_sigma * var.sqrt()


def masked_feature_loss(
    student: torch.Tensor, teacher: torch.Tensor, k_sigma: float = 2.0
) -> torch.Tensor:
    """Per-sample ``mean((m_s * h_s - m_t * h_t) ** 2)``; the teacher is detached."""
    if not isinstance(student, torch.Tensor) or not isinstance(teacher, torch.Tensor):
        raise TypeError("student and teacher features must be tensors")
    if student.shape != teacher.shape:
        raise ValueError(
            f"feature shapes differ: student {tuple(student.shape)} "
            f"vs teacher {tuple(teacher.shape)}"
        )
    teacher = teacher.detach()
    ms = massive_activation_mask(student, k_sigma)
    mt = massive_activation_mask(teacher, k_sigma)
    diff = ms * student - mt * teacher
    return (diff**2).flatten(1).mean(1)


def beta_feat_schedule(epoch: int, epochs: int, beta0: float = 1e-2) -> float:
    """``beta0 * (1 - epoch / (epochs - 1))``
    (``train_masked_kd.py``, ``init_beta_feature = 1e-2``)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be an int in [0, {epochs}), got {epoch!r}")
    return beta0 * (1 - epoch / max(epochs - 1, 1)) if epochs > 1 else 0.0


class _Recorder:
    def __init__(self, stack: nn.ModuleList, indices: Sequence[int]) -> None:
        self.features: dict[int, torch.Tensor] = {}
        self.handles = []
        for i in indices:

            def hook(module: nn.Module, args: tuple, output: Any, i: int = i) -> None:
                self.features[i] = output[0] if isinstance(output, tuple) else output

            self.handles.append(stack[i].register_forward_hook(hook))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class MaskedKD:
    """Feature recorder and loss of masked KD between a pruned ``student`` and its ``teacher``.

    Forward hooks record the outputs of the paired blocks. Call the student and the teacher
    (under ``torch.no_grad()``) on the same input, then :meth:`loss`. ``layer_pairs`` defaults to
    :func:`uniform_layer_pairs`; defaults ``alpha_kd=0.9``, ``beta_feat=1e-2``, ``k_sigma=2.0`` are
    the reference's.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        layer_pairs: Sequence[tuple[int, int]] | None = None,
        *,
        alpha_kd: float = 0.9,
        beta_feat: float = 1e-2,
        k_sigma: float = 2.0,
        student_blocks: str | None = None,
        teacher_blocks: str | None = None,
    ) -> None:
        _, s_stack = find_blocks(student, student_blocks)
        _, t_stack = find_blocks(teacher, teacher_blocks)
        if not 0.0 <= alpha_kd <= 1.0:
            raise ValueError(f"alpha_kd must be in [0, 1], got {alpha_kd!r}")
        if not math.isfinite(beta_feat) or beta_feat < 0:
            raise ValueError(f"beta_feat must be a finite number >= 0, got {beta_feat!r}")
        if not math.isfinite(k_sigma) or k_sigma <= 0:
            raise ValueError(f"k_sigma must be a finite number > 0, got {k_sigma!r}")
        pairs = (
            list(layer_pairs)
            if layer_pairs is not None
            else uniform_layer_pairs(len(s_stack), len(t_stack))
        )
        for s, t in pairs:
            if not (0 <= s < len(s_stack) and 0 <= t < len(t_stack)):
                raise ValueError(
                    f"layer pair ({s}, {t}) is out of range for a {len(s_stack)}-layer student "
                    f"and a {len(t_stack)}-layer teacher"
                )
        if not pairs:
            raise ValueError("layer_pairs is empty")
        self.pairs = pairs
        self.alpha_kd, self.beta0, self.beta_feat, self.k_sigma = (
            alpha_kd,
            beta_feat,
            beta_feat,
            k_sigma,
        )
        self._s = _Recorder(s_stack, [s for s, _ in pairs])
        self._t = _Recorder(t_stack, [t for _, t in pairs])

    def set_epoch(self, epoch: int, epochs: int) -> float:
        """Set beta_feat for ``epoch`` of ``epochs`` (linear decay to 0); returns it."""
        self.beta_feat = beta_feat_schedule(epoch, epochs, self.beta0)
        return self.beta_feat

    def feature_loss(self) -> torch.Tensor:
        """Mean over pairs of the per-sample masked feature loss (shape ``(batch,)``)."""
        missing = [s for s, _ in self.pairs if s not in self._s.features] + [
            t for _, t in self.pairs if t not in self._t.features
        ]
        if missing:
            raise RuntimeError("MaskedKD: run the student and the teacher forward before loss()")
        total = sum(
            masked_feature_loss(self._s.features[s], self._t.features[t], self.k_sigma)
            for s, t in self.pairs
        )
        return total / len(self.pairs)

    def loss(
        self,
        student_out: torch.Tensor,
        teacher_out: torch.Tensor,
        gt_loss: torch.Tensor,
        kd_extra: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"loss", "kd", "gt", "feat"}`` (scalars, batch means) for the last forward pair."""
        if student_out.shape != teacher_out.shape:
            raise ValueError(
                f"student_out {tuple(student_out.shape)} and "
                f"teacher_out {tuple(teacher_out.shape)} differ"
            )
        kd = ((student_out - teacher_out.detach()) ** 2).flatten(1).mean(1)
        if kd_extra is not None:
            kd = kd + kd_extra
        feat = self.feature_loss()
        gt = gt_loss.mean()
        total = self.alpha_kd * kd.mean() + (1 - self.alpha_kd) * gt + self.beta_feat * feat.mean()
        self._s.features.clear()
        self._t.features.clear()
        return {"loss": total, "kd": kd.mean(), "gt": gt, "feat": feat.mean()}

    def remove(self) -> None:
        """Remove the recording hooks."""
        self._s.remove()
        self._t.remove()
