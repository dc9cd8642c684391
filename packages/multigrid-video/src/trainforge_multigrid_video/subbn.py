"""Sub-batch normalisation with a mutable split count.

Written from reading ``facebookresearch/SlowFast:slowfast/models/batchnorm_helper.py``
(``SubBatchNorm3d``) and ``facebookresearch/SlowFast:slowfast/utils/misc.py``
(``aggregate_sub_bn_stats``). In training, the batch is viewed as ``(n/k, c*k, ...)`` and
normalised by one BN with ``c*k`` channels, so split ``j`` is the strided subset
``{i : i mod k == j}``; one shared affine ``weight, bias`` follows. In eval, a plain BN uses
the aggregated statistics ``mean = mean_j mean_j`` and ``var = mean_j var_j + mean_j
(mean_j - mean)**2``.

Differences from the reference (see the README): ``num_splits`` is a settable attribute
(the split statistics are re-seeded from the aggregate), so a long-cycle change needs no
model rebuild; switching to ``eval()`` aggregates automatically; a batch that does not
divide by ``num_splits`` is a ``ValueError`` instead of a reshape error.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainforge_core.surgery import Replacement, replace_modules

log = logging.getLogger(__name__)


class _SubBatchNorm(nn.Module):
    _ndim: int = 0  # input dims, set by subclasses

    def __init__(
        self,
        num_features: int,
        num_splits: int = 1,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        _check_splits(num_splits)
        if not (isinstance(eps, float | int) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, float | int) and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum!r}")
        kw = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self._num_splits = num_splits
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))
            self.register_buffer("running_var", torch.ones(num_features, **kw))
            self.register_buffer("split_running_mean", torch.zeros(num_features * num_splits, **kw))
            self.register_buffer("split_running_var", torch.ones(num_features * num_splits, **kw))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            for name in ("running_mean", "running_var", "split_running_mean", "split_running_var"):
                self.register_buffer(name, None)
            self.register_buffer("num_batches_tracked", None)

    # -- split count -----------------------------------------------------------------------
    @property
    def num_splits(self) -> int:
        return self._num_splits

    @num_splits.setter
    def num_splits(self, value: int) -> None:
        _check_splits(value)
        if value == self._num_splits:
            return
        if self.track_running_stats:
            # Fold the current splits into the aggregate, then start every new split from it.
            self.aggregate_stats()
            assert self.running_mean is not None and self.running_var is not None
            self.split_running_mean = self.running_mean.detach().repeat(value).clone()
            self.split_running_var = self.running_var.detach().repeat(value).clone()
        self._num_splits = value

    @torch.no_grad()
    def aggregate_stats(self) -> None:
        """Write the aggregate of the split running statistics into ``running_mean`` /
        ``running_var`` (what eval uses). Called automatically by ``eval()``."""
        if not self.track_running_stats:
            return
        assert self.split_running_mean is not None and self.split_running_var is not None
        k, c = self._num_splits, self.num_features
        means = self.split_running_mean.view(k, c)
        var = self.split_running_var.view(k, c)
        mean = means.mean(0)
        self.running_mean.copy_(mean)
        self.running_var.copy_(var.mean(0) + ((means - mean) ** 2).mean(0))

    def train(self, mode: bool = True) -> _SubBatchNorm:
        if self.training and not mode:
            self.aggregate_stats()
        return super().train(mode)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self._ndim:
            raise ValueError(
                f"{type(self).__name__} expects a {self._ndim}D input (N, C, ...), got shape "
                f"{tuple(x.shape)}"
            )
        n, c = x.shape[0], x.shape[1]
        if c != self.num_features:
            raise ValueError(
                f"input has {c} channels, {type(self).__name__} has {self.num_features}"
            )
        shape = (1, c) + (1,) * (self._ndim - 2)
        if self.training or not self.track_running_stats:
            k = self._num_splits
            if n % k:
                raise ValueError(
                    f"batch of {n} does not split into num_splits={k} equal groups; use a batch "
                    "size divisible by num_splits (keep drop_last=True)"
                )
            factor = 0.0
            if self.training and self.track_running_stats:
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else float(self.momentum)
                )
            y = F.batch_norm(
                x.reshape((n // k, c * k, *tuple(x.shape[2:]))),
                self.split_running_mean if self.training else None,
                self.split_running_var if self.training else None,
                None,
                None,
                True,
                factor,
                self.eps,
            ).reshape(x.shape)
        else:
            y = F.batch_norm(
                x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps
            )
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    # -- state dict: the split buffers take the saved split count ---------------------------
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "split_running_mean"
        if self.track_running_stats and key in state_dict:
            size = state_dict[key].numel()
            if size % self.num_features == 0 and size // self.num_features != self._num_splits:
                k = size // self.num_features
                self._num_splits = k
                self.split_running_mean = torch.zeros_like(self.running_mean).repeat(k)
                self.split_running_var = torch.ones_like(self.running_var).repeat(k)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_splits={self._num_splits}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )

    def to_batchnorm(self) -> nn.Module:
        """A plain ``nn.BatchNorm{2,3}d`` with the aggregated statistics and the affine."""
        cls = nn.BatchNorm2d if self._ndim == 4 else nn.BatchNorm3d
        bn = cls(self.num_features, self.eps, self.momentum, self.affine, self.track_running_stats)
        bn = bn.to(device=self.weight.device if self.affine else None)
        self.aggregate_stats()
        with torch.no_grad():
            if self.affine:
                bn.weight.copy_(self.weight)
                bn.bias.copy_(self.bias)
            if self.track_running_stats:
                bn.running_mean.copy_(self.running_mean)
                bn.running_var.copy_(self.running_var)
                bn.num_batches_tracked.copy_(self.num_batches_tracked)
        return bn.train(self.training)


class SubBatchNorm2d(_SubBatchNorm):
    """Sub-batch BN for ``(N, C, H, W)`` inputs (image models)."""

    _ndim = 4


class SubBatchNorm3d(_SubBatchNorm):
    """Sub-batch BN for ``(N, C, T, H, W)`` inputs (video models), as SlowFast's."""

    _ndim = 5


def _check_splits(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"num_splits must be a positive int, got {value!r}")


def convert_to_sub_bn(model: nn.Module, num_splits: int = 1) -> list[Replacement]:
    """Replace every ``nn.BatchNorm2d`` / ``nn.BatchNorm3d`` in ``model`` (in place) by a
    :class:`SubBatchNorm2d` / :class:`SubBatchNorm3d` with the same affine and running
    statistics. Returns the replacements; warns ``NoEffectWarning`` when there was no BN."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_splits(num_splits)

    def is_bn(_: str, m: nn.Module) -> bool:
        return type(m) in (nn.BatchNorm2d, nn.BatchNorm3d)

    def make(_: str, m: nn.Module) -> nn.Module:
        assert isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d)
        cls = SubBatchNorm2d if isinstance(m, nn.BatchNorm2d) else SubBatchNorm3d
        ref = m.weight if m.affine else m.running_mean
        new = cls(
            m.num_features,
            num_splits=1,
            eps=m.eps,
            momentum=m.momentum,
            affine=m.affine,
            track_running_stats=m.track_running_stats,
            device=None if ref is None else ref.device,
            dtype=None if ref is None else ref.dtype,
        )
        with torch.no_grad():
            if m.affine:
                new.weight.copy_(m.weight)
                new.bias.copy_(m.bias)
            if m.track_running_stats:
                new.running_mean.copy_(m.running_mean)
                new.running_var.copy_(m.running_var)
                new.split_running_mean.copy_(m.running_mean)
                new.split_running_var.copy_(m.running_var)
                new.num_batches_tracked.copy_(m.num_batches_tracked)
        new.num_splits = num_splits
        return new.train(m.training)

    done = replace_modules(model, is_bn, make, what="convert_to_sub_bn")
    log.info(
        "convert_to_sub_bn: %d BatchNorm layers -> SubBatchNorm (splits %d)", len(done), num_splits
    )
    return done


def _sub_bns(model: nn.Module) -> list[_SubBatchNorm]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [m for m in model.modules() if isinstance(m, _SubBatchNorm)]


def set_num_splits(model: nn.Module, num_splits: int) -> int:
    """Set ``num_splits`` on every SubBatchNorm in ``model``; returns how many were set."""
    _check_splits(num_splits)
    mods = _sub_bns(model)
    for m in mods:
        m.num_splits = num_splits
    return len(mods)


def aggregate_sub_bn(model: nn.Module) -> int:
    """Aggregate the split statistics of every SubBatchNorm in ``model`` (SlowFast
    ``aggregate_sub_bn_stats``); returns how many were aggregated."""
    mods = _sub_bns(model)
    for m in mods:
        m.aggregate_stats()
    return len(mods)


_BN_TYPES = (nn.modules.batchnorm._BatchNorm, _SubBatchNorm)


@torch.no_grad()
def precise_bn(model: nn.Module, batches: Any, num_batches: int) -> int:
    """Recompute the BatchNorm / SubBatchNorm running statistics of ``model`` as the plain
    average over ``num_batches`` training batches (``batches`` yields inputs, or
    ``(inputs, *rest)`` tuples), then aggregate the SubBatchNorm splits. Returns the number
    of batches used.

    This is SlowFast's precise BN (``facebookresearch/SlowFast:tools/train_net.py``
    ``calculate_and_update_precise_bn``, fvcore's ``update_bn_stats``; ``BN.USE_PRECISE_STATS``
    and ``NUM_BATCHES_PRECISE: 200`` in its Kinetics configs): run before evaluation on a
    loader at the current long-cycle shape *without* short cycles, so eval does not use
    running statistics that mix the short cycle's crops. Forward only, no gradients; the
    model's train/eval mode and every BN's momentum are restored."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
    bns = [m for m in model.modules() if isinstance(m, _BN_TYPES) and m.track_running_stats]
    if not bns:
        return 0
    was_training = model.training
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
    model.train()
    for m in bns:
        # momentum=None: the running statistics become the cumulative average of the
        # batches seen since num_batches_tracked was zeroed (PyTorch's BN semantics).
        m.momentum = None
        m.num_batches_tracked.zero_()
    used = 0
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, tuple | list) else batch
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"batches must yield tensors or (tensor, ...), got {type(x)}")
            model(x)
            used += 1
            if used >= num_batches:
                break
    finally:
        for m, (mom, nbt) in zip(bns, saved, strict=True):
            m.momentum = mom
            m.num_batches_tracked.copy_(nbt + used)
        model.train(was_training)
    if used == 0:
        raise ValueError("batches yielded no batch; precise BN needs at least one")
    for m in bns:
        if isinstance(m, _SubBatchNorm):
            m.aggregate_stats()
    return used
