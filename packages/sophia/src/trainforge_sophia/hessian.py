"""Diagonal-Hessian estimators for Sophia, and the every-k-steps helper.

- Gauss-Newton-Bartlett (SophiaG): sample labels from the model's own output distribution
  and take the gradient ``g_hat`` of the mean cross-entropy on them; ``B * g_hat * g_hat``
  is an unbiased estimate of the Gauss-Newton diagonal of the mean loss over B predictions
  (paper Alg. 2; train_sophiag.py samples ``Categorical(logits)`` at every position).
- Hutchinson (SophiaH): ``u * (H u)`` with ``E[u u^T] = I`` (Rademacher or Gaussian ``u``);
  ``H u`` by a double backward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainforge_sophia.optimizer import SophiaG, SophiaH

__all__ = [
    "gnb_loss",
    "hutchinson_diag",
    "maybe_update_hessian",
    "rademacher_like",
]

log = logging.getLogger(__name__)


def gnb_loss(
    logits: Tensor,
    labels: Tensor | None = None,
    *,
    ignore_index: int = -100,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Mean cross-entropy of ``logits`` against labels sampled from ``softmax(logits)``.

    ``logits``: ``[..., C]``. ``labels`` (optional, shape ``logits.shape[:-1]``) only marks
    which positions count: positions equal to ``ignore_index`` (padding) are left out of
    the sample and of the mean; the label values are not used otherwise. Backward of the
    result gives ``g_hat`` for :meth:`SophiaG.update_hessian`. The number of predictions
    it averages is ``(labels != ignore_index).sum()`` (all positions without labels).
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating tensor, got {type(logits).__name__}")
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape [..., classes], got {tuple(logits.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    with torch.no_grad():
        probs = torch.softmax(flat.detach().float(), dim=-1)
        if generator is not None and generator.device != probs.device:
            sampled = torch.multinomial(probs.cpu(), 1, generator=generator).to(probs.device)
        else:
            sampled = torch.multinomial(probs, 1, generator=generator)
        sampled = sampled.squeeze(-1)
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.shape != logits.shape[:-1]:
                raise ValueError(
                    f"labels must be a tensor of shape {tuple(logits.shape[:-1])}, got "
                    f"{getattr(labels, 'shape', type(labels).__name__)}"
                )
            keep = labels.reshape(-1) != ignore_index
            if not bool(keep.any()):
                raise ValueError("gnb_loss: every position is ignore_index; nothing to sample")
            sampled = torch.where(keep, sampled, torch.full_like(sampled, ignore_index))
    return F.cross_entropy(flat, sampled, ignore_index=ignore_index)


def rademacher_like(t: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Independent +-1 entries with probability 1/2 each (``randint(0, 2)``: the upper bound
    is exclusive, which kozistr's ``randint_like(p, 0, 1)`` got wrong, drawing only -1)."""
    device = t.device if generator is None else generator.device
    bits = torch.randint(0, 2, t.shape, generator=generator, device=device)
    return (bits * 2 - 1).to(device=t.device, dtype=t.dtype)


def _probe(t: Tensor, dist: str, generator: torch.Generator | None) -> Tensor:
    if dist == "rademacher":
        return rademacher_like(t, generator)
    device = t.device if generator is None else generator.device
    return torch.randn(t.shape, generator=generator, device=device, dtype=t.dtype).to(t.device)


def hutchinson_diag(
    loss: Tensor | Sequence[Tensor],
    params: Sequence[Tensor],
    *,
    n_samples: int = 1,
    dist: str = "rademacher",
    generator: torch.Generator | None = None,
    probes: Sequence[Sequence[Tensor]] | None = None,
) -> list[Tensor]:
    """Hutchinson estimate ``mean_s u_s * (H u_s)`` of the Hessian diagonal of ``loss``.

    ``loss``: a scalar with a graph, or the gradients of one taken with
    ``create_graph=True`` (as ``params``). ``probes`` (optional) supplies the ``u`` vectors,
    ``n_samples`` lists of tensors shaped like ``params``.
    """
    params = list(params)
    if not params:
        raise ValueError("hutchinson_diag: params is empty")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples <= 0:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if dist not in ("rademacher", "gaussian"):
        raise ValueError(f"dist must be 'rademacher' or 'gaussian', got {dist!r}")
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
        if not loss.requires_grad:
            raise ValueError("hutchinson_diag: loss has no graph (was it computed under no_grad?)")
        # A parameter the loss does not use has no gradient (and a zero Hessian diagonal).
        grads = list(torch.autograd.grad(loss, params, create_graph=True, allow_unused=True))
    else:
        grads = list(loss)
        if len(grads) != len(params):
            raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
        if not all(g.requires_grad for g in grads):
            raise ValueError("the gradients need a graph: backward(create_graph=True)")
    if probes is not None:
        probes = [list(z) for z in probes]
        n_samples = len(probes)
    out = [torch.zeros_like(p) for p in params]
    # Only gradients that depend on the parameters carry a Hessian-vector product.
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    if not live:
        return out
    for s in range(n_samples):
        zs = probes[s] if probes is not None else [_probe(p, dist, generator) for p in params]
        hz = torch.autograd.grad([grads[i] for i in live], params,
                                 grad_outputs=[zs[i] for i in live],
                                 retain_graph=s < n_samples - 1, allow_unused=True)  # fmt: skip
        for o, z, h in zip(out, zs, hz, strict=True):
            if h is not None:
                o.add_(z * h.detach(), alpha=1.0 / n_samples)
    return out


# -- the every-k-steps helper ---------------------------------------------------------------
def _split_batch(batch: Any) -> tuple[Any, Tensor | None]:
    """(model inputs, labels) for a token tensor or a dict batch."""
    if isinstance(batch, Tensor):
        return {"input_ids": batch}, None
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        labels = batch.get("labels")
        if labels is None and "input_ids" in batch:
            labels = batch["input_ids"]
            mask = batch.get("attention_mask")
            if mask is not None:
                labels = labels.masked_fill(mask == 0, -100)
        return inputs, labels
    raise TypeError(
        f"a batch must be a token tensor or a dict of tensors, got {type(batch).__name__}"
    )


def _causal_lm_logits(model: nn.Module, batch: Any) -> tuple[Tensor, Tensor | None]:
    """Logits predicting positions 1..T and their labels (for masking) of a causal LM."""
    inputs, labels = _split_batch(batch)
    logits = model(**inputs).logits
    logits = logits[:, :-1]
    if labels is not None:
        labels = labels[:, 1:]
    return logits, labels


def _causal_lm_loss(model: nn.Module, batch: Any) -> Tensor:
    inputs, labels = _split_batch(batch)
    if labels is None:
        labels = inputs["input_ids"]
    return model(**inputs, labels=labels).loss


def maybe_update_hessian(
    optimizer: SophiaG | SophiaH,
    model: nn.Module,
    batches: Iterable[Any] | Any,
    *,
    logits_fn: Callable[[nn.Module, Any], tuple[Tensor, Tensor | None]] | None = None,
    loss_fn: Callable[[nn.Module, Any], Tensor] | None = None,
    ignore_index: int = -100,
    grad_clip: float | None = 1.0,
    generator: torch.Generator | None = None,
    force: bool = False,
) -> bool:
    """When ``optimizer.hessian_due()`` (or ``force``), estimate the Hessian diagonal on
    ``batches`` (a fresh batch, or a list of micro-batches for gradient accumulation; each
    micro-batch's loss is divided by their number) and update the optimizer's EMA. The
    training gradients are set aside and restored. Returns whether it ran.

    A ``list`` of micro-batches is accumulated; a tensor, a mapping or a tuple is one batch.

    SophiaG: Gauss-Newton-Bartlett. ``logits_fn(model, batch) -> (logits, labels|None)``;
    the default suits transformers causal LMs (token tensors or dicts with ``input_ids``,
    optional ``labels``/``attention_mask``), shifting so position t predicts t+1. The
    sampled-label grads are clipped to ``grad_clip`` as in train_sophiag.py (None: no
    clipping, which keeps the estimate unbiased) and the number of predictions is recorded
    for ``bs=None``. SophiaH: Hutchinson on ``loss_fn(model, batch)`` (default: the causal
    LM loss) with the optimizer's ``n_samples`` / ``dist``; the same probes are used for
    every micro-batch, so the estimate is that of the accumulated mean loss.
    """
    if not isinstance(optimizer, SophiaG | SophiaH):
        raise TypeError(f"optimizer must be SophiaG or SophiaH, got {type(optimizer).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be positive or None, got {grad_clip!r}")
    if not (force or optimizer.hessian_due()):
        return False
    # A list (or other iterable) holds micro-batches; a tensor, mapping or tuple is one batch
    # (a tuple is how (inputs, labels) pairs come: it used to be read as two micro-batches).
    micro = [batches] if isinstance(batches, Tensor | Mapping | tuple) else list(batches)
    if not micro:
        raise ValueError("maybe_update_hessian: batches is empty")
    if isinstance(optimizer, SophiaG):
        _gnb_update(optimizer, model, micro, logits_fn or _causal_lm_logits, ignore_index,
                    grad_clip, generator)  # fmt: skip
    else:
        _hutchinson_update(optimizer, model, micro, loss_fn or _causal_lm_loss, generator)
    return True


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _is_ddp(model: nn.Module) -> bool:
    """Whether backward through ``model`` already averages the gradients across ranks
    (DDP, or FSDP2's ``fully_shard``, which reduce-scatters them)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return True
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - depends on the torch version
        return False
    return isinstance(model, FSDPModule)


def _average_across_ranks(tensors: Iterable[Tensor]) -> None:
    """All-reduce (mean) in place: the ranks' estimates become one, as DDP's gradient
    averaging makes them in the reference's training script."""
    world = _world_size()
    for t in tensors:
        torch.distributed.all_reduce(t)
        t.div_(world)


def _gnb_update(opt: SophiaG, model: nn.Module, micro: list[Any], logits_fn: Callable,
                ignore_index: int, grad_clip: float | None,
                generator: torch.Generator | None) -> None:  # fmt: skip
    n_pred = 0
    with opt._swap_grads() as params:
        for batch in micro:
            logits, labels = logits_fn(model, batch)
            loss = gnb_loss(logits, labels, ignore_index=ignore_index, generator=generator)
            (loss / len(micro)).backward()
            n_pred += (
                int((labels != ignore_index).sum()) if labels is not None
                else math.prod(logits.shape[:-1])
            )  # fmt: skip
        if _world_size() > 1:
            # bs = the predictions of every rank (train_sophiag.py: total_bs over all
            # processes); the grads averaged across ranks unless DDP's backward did it.
            count = torch.tensor([n_pred], dtype=torch.float64)
            torch.distributed.all_reduce(count)
            n_pred = int(count.item())
            if not _is_ddp(model):
                # Every parameter takes part (zeros where this rank has no grad), so the
                # ranks issue the same collectives and none waits forever.
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                _average_across_ranks(grads)
                for p, g in zip(params, grads, strict=True):
                    if p.grad is None and bool(g.any()):
                        p.grad = g
        if grad_clip is not None:  # train_sophiag.py clips the sampled-label grads too
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
        opt.update_hessian(n_predictions=n_pred)
    log.debug("GNB Hessian estimate on %d predictions", n_pred)


def _hutchinson_update(opt: SophiaH, model: nn.Module, micro: list[Any], loss_fn: Callable,
                       generator: torch.Generator | None) -> None:  # fmt: skip
    params = [p for g in opt.param_groups for p in g["params"] if p.requires_grad]
    probes = [[_probe(p, opt.dist, generator) for p in params] for _ in range(opt.n_samples)]
    total = [torch.zeros_like(p) for p in params]
    with opt._swap_grads():
        for batch in micro:
            loss = loss_fn(model, batch) / len(micro)
            est = hutchinson_diag(loss, params, probes=probes)
            for t, e in zip(total, est, strict=True):
                t.add_(e)
    if _world_size() > 1:  # one estimate for every rank (the mean over their batches)
        _average_across_ranks(total)
    opt.update_hessian(dict(zip(params, total, strict=True)))
