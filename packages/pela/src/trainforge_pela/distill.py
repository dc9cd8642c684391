"""PELA step 2: the intermediate pre-training loss.

``total = task + α·L_fd + β·L_logit + λ·L_wpr`` with

- ``L_fd``: mean over blocks of ``MSE(h_l^student, h_l^teacher)``, each block's output
  captured by forward hooks (``guoyang9/PELA:DeiT/engine.py``, ``L_fm``; the models there
  return every block's token output, ``DeiT/models.py`` ``output_feature=True``);
- ``L_logit``: ``MSE(z_student, z_teacher)`` (``engine.py``, ``L_sr``);
- ``L_wpr``: mean over compressed layers of ``(max|BA − W_teacher| − ε)²``
  (``engine.py``, ``inf_norm``: ``mse_loss(torch.norm(BA − W, inf), ε)``).

The teacher is the frozen original model (run under ``torch.no_grad``, in eval mode); the
student is the whole compressed model. Hooks only record while the loss is being computed
and can be removed with :meth:`PELALoss.remove` (or ``with PELALoss(...) as loss_fn:``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_pela.lowrank import DEFAULT_SKIP, LowRankLinear, _check_ratio

AUTO_BLOCK_PATTERNS: tuple[str, ...] = (
    "blocks.*",
    "layers.*.blocks.*",
    "stages.*.blocks.*",
    "**.encoder.layer.*",
    "encoder.layer.*",
    "**.encoder.layers.*",
    "encoder.layers.*",
    "**.layers.*",
    "layers.*",
)
"""Block patterns tried in order when ``block_pattern=None``: timm ViT/DeiT/EVA, timm Swin,
transformers BERT-style encoders, other transformers encoders/decoders. ``*`` matches one
dotted name component, ``**`` any run of them."""

TaskLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_weights(alpha: float, beta: float, lam: float, eps: float) -> None:
    for name, v in (("alpha", alpha), ("beta", beta), ("lam", lam), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise TypeError(f"{name} must be a finite number, got {v!r}")
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v!r}")


@dataclass(frozen=True)
class PELAConfig:
    """Compression and loss knobs of one reference script (see :data:`PRESETS`)."""

    ratio: float = 2.0
    skip: tuple[str, ...] = DEFAULT_SKIP
    alpha: float = 1.0
    beta: float = 0.0
    lam: float = 1.0
    eps: float = 1e-3
    lr: float = 5e-4
    weight_decay: float = 0.05

    def __post_init__(self) -> None:
        _check_ratio(self.ratio)
        _check_weights(self.alpha, self.beta, self.lam, self.eps)
        for name in ("lr", "weight_decay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")


PRESETS: dict[str, PELAConfig] = {
    "deit": PELAConfig(ratio=2.0, alpha=1.0, beta=0.0, lam=0.0, eps=1e-3),
    "swin": PELAConfig(
        ratio=1.5, skip=(*DEFAULT_SKIP, "attn.proj"), alpha=1.0, beta=0.0, lam=1.0, eps=0.0
    ),
    "albef": PELAConfig(
        ratio=3.0,
        skip=("cls", "_proj"),
        alpha=0.1,
        beta=0.0,
        lam=1.0,
        eps=1e-3,
        lr=1e-4,
        weight_decay=0.02,
    ),
}
"""The reference's settings per script.
``deit``: ``DeiT/scripts/train_base.sh`` + ``DeiT/main.py`` (ratio 2, α 1, β 0, no
regulariser, lr 5e-4 scaled by batch/512, AdamW wd 0.05).
``swin``: ``Swin/scripts/train_swin_b.sh`` + ``Swin/main.py`` (ratio 1.5, ``attn.proj``
also kept, α 1, λ 1 with ``--inf_norm_eps`` left at its default 0.0).
``albef``: ``ALBEF/Pretrain.py`` (``ModuleLowRank`` default ratio 3, ``name_omit``
``['cls', '_proj']``, KD weight 0.1, ``inf_norm`` eps 1e-3 weight 1; AdamW lr 1e-4,
wd 0.02 from ``configs/Pretrain.yaml``)."""


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches one dotted name component, ``**`` any run of them (possibly none)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**.", i):
            out.append(r"(?:[^.]+\.)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]+")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def find_blocks(model: nn.Module, block_pattern: str | None = None) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs feature distillation compares, in forward (name) order.

    ``block_pattern=None`` tries :data:`AUTO_BLOCK_PATTERNS` and takes the first that
    matches. Raises ``ValueError`` when nothing matches.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if block_pattern is not None and (not isinstance(block_pattern, str) or not block_pattern):
        raise TypeError(f"block_pattern must be a non-empty string or None, got {block_pattern!r}")
    candidates = AUTO_BLOCK_PATTERNS if block_pattern is None else (block_pattern,)
    named = [(n, m) for n, m in model.named_modules() if n]
    for pattern in candidates:
        rx = glob_to_regex(pattern)
        hits = [(n, m) for n, m in named if rx.match(n)]
        if hits:
            return hits
    raise ValueError(
        f"block_pattern={block_pattern!r} matches no module of this {type(model).__name__}"
        + (f" (tried {AUTO_BLOCK_PATTERNS})" if block_pattern is None else "")
        + "; pass a pattern such as 'blocks.*' ('*' = one name component, '**' = any)"
    )


def weight_pairs(
    teacher: nn.Module, student: nn.Module
) -> list[tuple[str, torch.Tensor, LowRankLinear]]:
    """``(name, W_teacher, student layer)`` for every compressed layer of the student whose
    name is an ``nn.Linear`` of the teacher with the same shape."""
    t_modules = dict(teacher.named_modules())
    pairs = []
    for name, layer in student.named_modules():
        if not isinstance(layer, LowRankLinear):
            continue
        t = t_modules.get(name)
        if isinstance(t, nn.Linear) and tuple(t.weight.shape) == (
            layer.out_features,
            layer.in_features,
        ):
            pairs.append((name, t.weight, layer))
    return pairs


def weight_perturbation(
    pairs: list[tuple[str, torch.Tensor, LowRankLinear]], eps: float = 1e-3
) -> torch.Tensor:
    """``L_wpr``: mean over pairs of ``(max|BA − W| − eps)²`` (``DeiT/engine.py`` ``inf_norm``)."""
    if not pairs:
        raise ValueError("weight_perturbation needs at least one (teacher, compressed) pair")
    terms = []
    for _, w, layer in pairs:
        diff = layer[1].weight @ layer[0].weight - w.detach()
        terms.append((torch.linalg.vector_norm(diff, ord=math.inf) - eps) ** 2)
    return torch.stack(terms).mean()


@dataclass
class PELAOutput:
    """One evaluation of :class:`PELALoss`. ``task``, ``fd``, ``logit`` and ``wpr`` are the
    unweighted parts; ``total = task + alpha*fd + beta*logit + lam*wpr``."""

    total: torch.Tensor
    task: torch.Tensor
    fd: torch.Tensor
    logit: torch.Tensor
    wpr: torch.Tensor
    logits: torch.Tensor
    weights: dict[str, float] = field(default_factory=dict)

    def parts(self) -> dict[str, float]:
        """The parts as floats (for logging)."""
        return {
            k: float(getattr(self, k).detach()) for k in ("total", "task", "fd", "logit", "wpr")
        }


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, tuple | list) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    for attr in ("last_hidden_state", "hidden_states"):
        v = getattr(value, attr, None)
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError(
        f"cannot find the output tensor in a block output of type {type(value).__name__}"
    )


def call_model(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Run ``model`` and return its logits: a tensor output, ``.logits`` or the first element.
    A mapping with one entry is passed positionally, a larger one as keywords."""
    if isinstance(inputs, Mapping):
        out = model(next(iter(inputs.values()))) if len(inputs) == 1 else model(**inputs)
    elif isinstance(inputs, tuple):
        out = model(*inputs)
    else:
        out = model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return _first_tensor(out)


class _Recorder:
    def __init__(self, blocks: list[tuple[str, nn.Module]]) -> None:
        self.active = False
        self.features: list[torch.Tensor | None] = [None] * len(blocks)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, (_, m) in enumerate(blocks)]

    def _hook(self, i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self.active:
                self.features[i] = _first_tensor(output)

        return hook

    def reset(self) -> None:
        self.features = [None] * len(self.features)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class PELALoss:
    """``total = task + alpha·L_fd + beta·L_logit + lam·L_wpr`` for a (teacher, student) pair.

    ``loss_fn(inputs, target)`` runs the teacher (no grad) and the student on ``inputs`` and
    returns a :class:`PELAOutput`; ``target=None`` drops the task loss (pure distillation).
    ``task_loss(logits, target)`` defaults to cross-entropy. Block outputs are captured with
    forward hooks on the modules matching ``block_pattern`` (the model code is not touched);
    teacher and student must have the same number of blocks. Defaults: α 1, β 0, λ 1, ε 1e-3
    (the paper's full loss; :data:`PRESETS` holds each reference script's values, see
    :meth:`from_preset`).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        block_pattern: str | None = None,
        alpha: float = 1.0,
        beta: float = 0.0,
        lam: float = 1.0,
        eps: float = 1e-3,
        task_loss: TaskLoss | None = None,
    ) -> None:
        for name, m in (("teacher", teacher), ("student", student)):
            if not isinstance(m, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(m).__name__}")
        if teacher is student:
            raise ValueError("teacher and student are the same module; pass a compressed copy")
        _check_weights(alpha, beta, lam, eps)
        if task_loss is not None and not callable(task_loss):
            raise TypeError(f"task_loss must be callable(logits, target), got {task_loss!r}")
        t_blocks = find_blocks(teacher, block_pattern)
        s_blocks = find_blocks(student, block_pattern)
        if len(t_blocks) != len(s_blocks):
            raise ValueError(
                f"teacher has {len(t_blocks)} blocks ({t_blocks[0][0]}...) but student has "
                f"{len(s_blocks)} ({s_blocks[0][0]}...) for block_pattern={block_pattern!r}; "
                "feature distillation needs one student block per teacher block"
            )
        self.pairs = weight_pairs(teacher, student)
        if lam > 0 and not self.pairs:
            raise ValueError(
                f"lam={lam} but the student has no compressed layer matching a teacher "
                "nn.Linear; compress the student first (apply_pela) or pass lam=0"
            )
        self.teacher = teacher.eval()
        self.student = student
        self.block_names = [n for n, _ in s_blocks]
        self.alpha, self.beta, self.lam, self.eps = (
            float(alpha),
            float(beta),
            float(lam),
            float(eps),
        )
        self.task_loss: TaskLoss = task_loss or F.cross_entropy
        self._t_rec = _Recorder(t_blocks)
        self._s_rec = _Recorder(s_blocks)

    @classmethod
    def from_preset(
        cls, teacher: nn.Module, student: nn.Module, preset: str, **overrides: Any
    ) -> PELALoss:
        """α, β, λ and ε of a reference script (``"deit"``, ``"swin"``, ``"albef"``)."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        p = PRESETS[preset]
        kwargs: dict[str, Any] = {"alpha": p.alpha, "beta": p.beta, "lam": p.lam, "eps": p.eps}
        kwargs.update(overrides)
        return cls(teacher, student, **kwargs)

    def __call__(self, inputs: Any, target: torch.Tensor | None = None) -> PELAOutput:
        if not self._s_rec.handles:
            raise RuntimeError("this PELALoss was removed; build a new one")
        self.teacher.eval()
        try:
            self._t_rec.active = self._s_rec.active = True
            with torch.no_grad():
                z_t = call_model(self.teacher, inputs)
            z_s = call_model(self.student, inputs)
            t_feats, s_feats = self._t_rec.features, self._s_rec.features
        finally:
            self._t_rec.active = self._s_rec.active = False
            self._t_rec.reset()
            self._s_rec.reset()
        missing = [self.block_names[i] for i, f in enumerate(s_feats) if f is None]
        missing += [self.block_names[i] for i, f in enumerate(t_feats) if f is None]
        if missing:
            raise RuntimeError(f"blocks {sorted(set(missing))} did not run in the forward pass")
        fd = torch.stack(
            [F.mse_loss(s, t.detach()) for s, t in zip(s_feats, t_feats, strict=True)]  # type: ignore[arg-type]
        ).mean()
        logit = F.mse_loss(z_s, z_t.detach())
        if self.pairs:
            if self.lam > 0:
                wpr = weight_perturbation(self.pairs, self.eps)
            else:
                with torch.no_grad():
                    wpr = weight_perturbation(self.pairs, self.eps)
        else:
            wpr = z_s.new_zeros(())
        task = self.task_loss(z_s, target) if target is not None else z_s.new_zeros(())
        total = task + self.alpha * fd + self.beta * logit + self.lam * wpr
        return PELAOutput(
            total=total,
            task=task,
            fd=fd,
            logit=logit,
            wpr=wpr,
            logits=z_s,
            weights={"alpha": self.alpha, "beta": self.beta, "lam": self.lam},
        )

    def remove(self) -> None:
        """Remove the forward hooks from both models."""
        self._t_rec.remove()
        self._s_rec.remove()

    def __enter__(self) -> PELALoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
