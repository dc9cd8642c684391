"""Find the residual block stack of a model and restrict it to chosen layers.

Layouts recognised automatically (first match wins):

* ``blocks``: the DiT built here (:class:`~trainforge_tinyfusion.dit.TinyDiT`), the reference's
  ``DiT`` (``VainF/TinyFusion:models.py``) and timm's ``VisionTransformer``;
* ``model.layers`` / ``layers``: transformers Llama-style decoders (``LlamaForCausalLM``,
  ``LlamaModel``; Mistral, Qwen2, ... share it);
* ``transformer.h`` / ``h``: transformers GPT-2-style decoders.

Anything else: pass the dotted path of the ``nn.ModuleList`` as ``blocks=``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from torch import nn

logger = logging.getLogger(__name__)

KNOWN_PATHS: tuple[str, ...] = (
    "blocks",
    "model.layers",
    "layers",
    "transformer.h",
    "h",
    "model.decoder.layers",
    "decoder.layers",
)
_STACKS = (nn.ModuleList, nn.Sequential)


def find_blocks(
    model: nn.Module, blocks: str | None = None
) -> tuple[str, nn.ModuleList | nn.Sequential]:
    """The dotted path and the ``nn.ModuleList`` (or ``nn.Sequential``, as timm's ViT) of
    ``model``'s residual block stack.

    ``blocks`` names the path explicitly; otherwise the paths in :data:`KNOWN_PATHS` are tried.
    Raises ``TypeError`` for a non-module and ``ValueError`` when no stack is found.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if blocks is not None:
        if not isinstance(blocks, str) or not blocks:
            raise TypeError(f"blocks must be a dotted attribute path (str), got {blocks!r}")
        try:
            stack = model.get_submodule(blocks)
        except AttributeError as exc:
            raise ValueError(
                f"blocks={blocks!r}: {type(model).__name__} has no submodule at that path"
            ) from exc
        if not isinstance(stack, _STACKS) or len(stack) == 0:
            raise ValueError(
                f"blocks={blocks!r} is a {type(stack).__name__} of length "
                f"{len(stack) if hasattr(stack, '__len__') else '?'}; a non-empty "
                "nn.ModuleList / nn.Sequential of residual blocks is required"
            )
        return blocks, stack
    for path in KNOWN_PATHS:
        try:
            stack = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(stack, _STACKS) and len(stack) > 0:
            return path, stack
    raise ValueError(
        f"no residual block stack found in {type(model).__name__}: tried the paths "
        f"{list(KNOWN_PATHS)}; pass blocks='dotted.path.to.ModuleList' for other layouts"
    )


def _update_depth_metadata(model: nn.Module, keep: Sequence[int], old_depth: int) -> None:
    """Keep a model's own record of its depth consistent with the new block list."""
    new_depth = len(keep)
    config = getattr(model, "config", None)
    if config is not None:
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(config, attr, None) == old_depth:
                setattr(config, attr, new_depth)
        layer_types = getattr(config, "layer_types", None)
        if isinstance(layer_types, list | tuple) and len(layer_types) == old_depth:
            config.layer_types = [layer_types[i] for i in keep]
    if isinstance(getattr(model, "depth", None), int) and model.depth == old_depth:
        model.depth = new_depth


def _renumber_layer_indices(stack: nn.Module) -> None:
    """transformers attention modules carry ``layer_idx`` for the KV cache: renumber them."""
    for new_idx, block in enumerate(stack):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx


def prune_layers(
    model: nn.Module, keep: Sequence[int], *, blocks: str | None = None, inplace: bool = False
) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace=True``) whose block stack holds
    only the layers ``keep`` (sorted, distinct, in range), with its weights untouched.

    This is the reference's export (``VainF/TinyFusion:prune_by_learning.py``, end of ``main``;
    ``prune_by_index.py``): the kept blocks, in their order, nothing else changed. The model's
    depth metadata (transformers ``config.num_hidden_layers`` / ``n_layer`` / ``layer_types``,
    attention ``layer_idx``, a ``depth`` attribute) follows, so ``save_pretrained`` /
    ``from_pretrained`` and generation with a KV cache keep working.
    """
    path, stack = find_blocks(model, blocks)
    depth = len(stack)
    if isinstance(keep, str | bytes) or not isinstance(keep, Sequence):
        raise TypeError(f"keep must be a sequence of layer indices, got {keep!r}")
    kept = list(keep)
    if not kept:
        raise ValueError("keep is empty: at least one layer must be kept")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in kept):
        raise TypeError(f"keep must hold ints, got {kept!r}")
    if any(i < 0 or i >= depth for i in kept):
        raise ValueError(f"keep={kept} has indices outside [0, {depth}) for a {depth}-layer stack")
    if len(set(kept)) != len(kept) or kept != sorted(kept):
        raise ValueError(f"keep={kept} must be strictly increasing (sorted, no repeats)")
    out = model if inplace else copy.deepcopy(model)
    parent_path, _, attr = path.rpartition(".")
    parent = out.get_submodule(parent_path) if parent_path else out
    old = getattr(parent, attr)
    new = (
        type(old)(*[old[i] for i in kept])
        if isinstance(old, nn.Sequential)
        else nn.ModuleList([old[i] for i in kept])
    )
    setattr(parent, attr, new)
    _update_depth_metadata(out, kept, depth)
    _renumber_layer_indices(new)
    logger.info("pruned %s: kept %d of %d layers %s", path, len(kept), depth, kept)
    return out
