"""LoRA on every linear layer: the recoverability term Delta W co-optimised with the gates.

The reference (``VainF/TinyFusion:prune_by_learning.py``, ``convert_to_lora_model``) swaps every
``nn.Linear`` for torchtune's ``LoRALinear`` with rank 8 and alpha = 2 * rank = 16. Here the
adapter is added *beside* each linear: two submodules ``lora_a`` (in -> r, kaiming-uniform as
torchtune) and ``lora_b`` (r -> out, zeros) and a forward hook adding
``(alpha / rank) * lora_b(lora_a(x))`` to the output. The weight keys keep their names (torchtune
names its adapter keys ``lora_a`` / ``lora_b`` too), transformers' GPT-2 ``Conv1D`` is covered as
well, and :func:`detach_lora` removes (or merges) the adapters exactly.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning

logger = logging.getLogger(__name__)

_HOOK_ATTR = "_tinyfusion_lora_hook"


def _dims(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a linear-like module, None when it is not one."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
        w = module.weight  # transformers' Conv1D: weight (in, out), y = x @ W + b
        if w.dim() == 2:
            return int(w.shape[0]), int(w.shape[1])
    return None


def _lora_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    delta = module.lora_b(module.lora_a(x.to(module.lora_a.weight.dtype)))
    return output + (module.lora_scale * delta).to(output.dtype)


def attach_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    *,
    exclude: Sequence[str] = (),
    freeze_base: bool = True,
) -> list[str]:
    """Attach LoRA adapters to every linear layer of ``model`` in place; return their names.

    Defaults ``rank=8``, ``alpha=16`` are the reference's (``--lora-rank 8``, alpha = 2 * rank;
    ``VainF/TinyFusion:prune_by_learning.py``). ``exclude`` lists name prefixes to skip. With
    ``freeze_base`` every non-adapter parameter gets ``requires_grad=False``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if isinstance(exclude, str):
        raise TypeError("exclude must be a sequence of name prefixes, not a single str")
    targets = [
        (n, m)
        for n, m in model.named_modules()
        if _dims(m) is not None
        and not hasattr(m, _HOOK_ATTR)
        and not n.endswith(("lora_a", "lora_b"))
        and not any(n == e or n.startswith(e + ".") for e in exclude)
    ]
    if freeze_base:
        for p in model.parameters():
            p.requires_grad_(False)
    names = []
    for name, module in targets:
        d_in, d_out = _dims(module)  # type: ignore[misc]
        w = module.weight
        a = nn.Linear(d_in, rank, bias=False, device=w.device, dtype=w.dtype)
        b = nn.Linear(rank, d_out, bias=False, device=w.device, dtype=w.dtype)
        # torchtune LoRALinear.initialize_parameters: kaiming_uniform_(a=sqrt(5)) on A, zeros on B.
        nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        nn.init.zeros_(b.weight)
        module.add_module("lora_a", a)
        module.add_module("lora_b", b)
        module.lora_scale = float(alpha) / rank
        # Keep the hook's id (an int), not its handle, so deep copies of the model stay detachable.
        setattr(module, _HOOK_ATTR, module.register_forward_hook(_lora_hook).id)
        names.append(name)
    if not names:
        warnings.warn(
            "attach_lora: no linear layer found; the model is unchanged",
            NoEffectWarning,
            stacklevel=2,
        )
    logger.info("attach_lora: %d adapters (rank %d, alpha %g)", len(names), rank, alpha)
    return names


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter parameters attached by :func:`attach_lora`."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [
        p for n, p in model.named_parameters() if ".lora_a." in f".{n}" or ".lora_b." in f".{n}"
    ]


@torch.no_grad()
def detach_lora(model: nn.Module, *, merge: bool = False) -> int:
    """Remove every adapter attached by :func:`attach_lora`; with ``merge=True`` first add
    ``scale * B @ A`` into the base weight. Returns the number of adapters removed (warns
    ``NoEffectWarning`` when there were none)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(merge, bool):
        raise TypeError(f"merge must be a bool, got {merge!r}")
    count = 0
    for module in list(model.modules()):
        hook_id = getattr(module, _HOOK_ATTR, None)
        if hook_id is None:
            continue
        if merge:
            delta = module.lora_scale * (module.lora_b.weight @ module.lora_a.weight)  # (out, in)
            if isinstance(module, nn.Linear):
                module.weight.add_(delta.to(module.weight.dtype))
            else:  # Conv1D stores (in, out)
                module.weight.add_(delta.t().to(module.weight.dtype))
        module._forward_hooks.pop(hook_id, None)
        delattr(module, _HOOK_ATTR)
        del module.lora_a, module.lora_b, module.lora_scale
        count += 1
    if count == 0:
        warnings.warn("detach_lora: the model has no LoRA adapters", NoEffectWarning, stacklevel=2)
    return count
