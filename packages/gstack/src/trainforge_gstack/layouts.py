"""Where a transformers decoder keeps its blocks, and which modules write to the residual stream.

G_stack copies whole decoder blocks, so it only needs to find the block list. The
function-preserving ``zero`` operator also needs each block's output projections (the
linear maps whose output is added to the residual stream), which it zeroes.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class DecoderLayout:
    """How one model family stores its decoder blocks.

    ``layers``: dotted path from the ``*ForCausalLM`` model to the ``nn.ModuleList`` of
    blocks. ``output_projections``: paths inside one block of the modules whose output is
    added to the residual stream (attention output and MLP down projection).
    """

    family: str
    layers: str
    output_projections: tuple[str, ...]


# Llama-style blocks (model.layers[i].self_attn.o_proj / .mlp.down_proj): the layout
# G_zero_depthwise.py zeroes (tongxuluo/prts:G_zero_depthwise.py, expend_depth, lemon path).
_LLAMA = DecoderLayout("llama", "model.layers", ("self_attn.o_proj", "mlp.down_proj"))
LAYOUTS: dict[str, DecoderLayout] = {
    "llama": _LLAMA,
    "mistral": DecoderLayout("mistral", _LLAMA.layers, _LLAMA.output_projections),
    "gpt2": DecoderLayout("gpt2", "transformer.h", ("attn.c_proj", "mlp.c_proj")),
    "gpt_neox": DecoderLayout(
        "gpt_neox", "gpt_neox.layers", ("attention.dense", "mlp.dense_4h_to_h")
    ),
}
"""Known decoder layouts by transformers ``model_type``: where the block list and its config
fields live."""
# Residual-stream writers of families found generically (Phi: self_attn.dense / mlp.fc2;
# Qwen2/3, Gemma, OLMo share Llama's o_proj / down_proj).
_KNOWN_OUTPUTS = tuple(
    dict.fromkeys(
        [p for lay in LAYOUTS.values() for p in lay.output_projections]
        + ["self_attn.dense", "mlp.fc2"]
    )
)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if getattr(model, "config", None) is None:
        raise TypeError(
            f"model must be a transformers model with a .config, got {type(model).__name__}"
        )
    return model


def find_layout(model: nn.Module, layers_attr: str = "auto") -> DecoderLayout:
    """The :class:`DecoderLayout` of ``model``.

    ``layers_attr="auto"`` looks the model's ``config.model_type`` up in :data:`LAYOUTS`
    (Llama, Mistral, GPT-2, GPT-NeoX) and otherwise finds the one ``nn.ModuleList`` of
    ``*DecoderLayer`` blocks (Qwen2/3, Gemma, Phi, OLMo, a bare ``LlamaModel``, ...). A
    dotted path (e.g. ``"model.layers"``) names the block list of any other decoder. Output
    projections of a layout not in :data:`LAYOUTS` are looked for under the names the known
    families use.
    """
    model = _check_model(model)
    if not isinstance(layers_attr, str) or not layers_attr:
        raise TypeError(f"layers_attr must be 'auto' or a dotted path, got {layers_attr!r}")
    model_type = getattr(model.config, "model_type", None)
    known = LAYOUTS.get(str(model_type))
    if layers_attr == "auto" and known is not None and _has_submodule(model, known.layers):
        layout = known
    else:
        path = _find_decoder_stack(model) if layers_attr == "auto" else layers_attr
        first = _get_layers(model, path)[0]
        outputs = tuple(p for p in _KNOWN_OUTPUTS if _has_submodule(first, p))
        layout = DecoderLayout(str(model_type), path, outputs)
    _get_layers(model, layout.layers)
    return layout


def _find_decoder_stack(model: nn.Module) -> str:
    """The path of the single ``nn.ModuleList`` whose blocks are ``*DecoderLayer`` modules."""
    stacks = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and all(type(block).__name__.endswith("DecoderLayer") for block in module)
    ]
    if len(stacks) != 1:
        found = "none" if not stacks else ", ".join(repr(s) for s in stacks)
        raise ValueError(
            f"unsupported model: config.model_type={getattr(model.config, 'model_type', None)!r} "
            f"({type(model).__name__}) is not in {sorted(LAYOUTS)} and has no single "
            f"ModuleList of *DecoderLayer blocks (found {found}). Pass "
            "layers_attr='path.to.layers' to grow its block list"
        )
    return stacks[0]


def _get_layers(model: nn.Module, path: str) -> nn.ModuleList:
    try:
        layers = model.get_submodule(path)
    except AttributeError as exc:
        raise ValueError(
            f"unsupported model layout: {type(model).__name__} has no submodule {path!r}"
        ) from exc
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"unsupported model layout: {type(model).__name__}.{path} is "
            f"{type(layers).__name__}, not a non-empty nn.ModuleList of decoder blocks"
        )
    return layers


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True
