"""Architecture adapters: map a transformers model's parameter names to bert2BERT roles.

A role says how a tensor is laid out and which index map (:meth:`ExpansionPlan.index`)
applies to each of its axes:

- ``linear``: ``nn.Linear`` weight, ``[out, in]``;
- ``conv1d``: GPT-2's ``Conv1D`` weight, ``[in, out]``;
- ``embedding``: ``[rows, D]``, the hidden axis copied (an out-dimension);
- ``vector``: a bias or norm gain along its out-dimension (copied).

Out-dimensions are copied, in-dimensions split by the duplicate count C (FPI, paper eq. 7-8).
The paper defines the method on BERT; GPT-2 (the paper's GPT experiments) and Llama use the
same roles.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from trainforge_bert2bert.plan import Dims


@dataclass(frozen=True)
class Role:
    """How one parameter grows: its storage layout and which expanded dimension (hidden,
    heads, FFN, ...) each of its axes runs along."""

    layout: str  # linear | conv1d | embedding | vector
    out: str | None  # dimension kind of the output axis (None: unchanged, e.g. vocab)
    inp: str | None = None  # dimension kind of the input axis


_UNIT_KINDS = ("H", "KV", "3H", "F")  # dimensions whose new units AKI takes from layer l+1
HEAD = "__lm_head__"  # marker role for the output projection onto the vocabulary


@dataclass(frozen=True)
class ArchAdapter:
    """What bert2BERT needs to know about one transformers architecture."""

    name: str
    model_types: tuple[str, ...]
    layers_path: str  # attribute path of the ModuleList of blocks
    head_weight: str  # full name of the vocabulary projection weight
    embedding_weight: str  # full name of the token embedding weight
    roles: tuple[tuple[str, Role | str], ...]  # (regex on the full name, role)
    head_modules: tuple[str, ...]  # modules trained with every sub-model (stage 1)

    # -- configs -----------------------------------------------------------------------
    def dims(self, config: Any) -> Dims:
        if self.name == "gpt2":
            hidden, heads, layers = config.n_embd, config.n_head, config.n_layer
            ffn = config.n_inner if config.n_inner is not None else 4 * hidden
            kv = heads
            head_dim = hidden // heads
        else:
            hidden, heads = config.hidden_size, config.num_attention_heads
            layers, ffn = config.num_hidden_layers, config.intermediate_size
            kv = getattr(config, "num_key_value_heads", None) or heads
            head_dim = getattr(config, "head_dim", None) or hidden // heads
        if self.name != "llama" and hidden % heads:
            raise ValueError(f"hidden size {hidden} is not divisible by {heads} heads")
        return Dims(layers, hidden, heads, kv, ffn, head_dim)

    def with_dims(self, config: Any, dims: Dims) -> Any:
        """A copy of ``config`` with the sizes in ``dims``."""
        new = copy.deepcopy(config)
        if self.name == "gpt2":
            new.n_embd, new.n_head, new.n_layer, new.n_inner = (
                dims.hidden,
                dims.heads,
                dims.layers,
                dims.ffn,
            )
            return new
        new.hidden_size, new.num_attention_heads = dims.hidden, dims.heads
        new.num_hidden_layers, new.intermediate_size = dims.layers, dims.ffn
        if self.name == "llama":
            new.num_key_value_heads = dims.kv_heads
            new.head_dim = dims.head_dim
        return new

    def with_layers(self, config: Any, layers: int) -> Any:
        new = copy.deepcopy(config)
        if self.name == "gpt2":
            new.n_layer = layers
        else:
            new.num_hidden_layers = layers
        if getattr(new, "layer_types", None) is not None:  # newer Llama configs
            new.layer_types = [new.layer_types[0]] * layers
        return new

    # -- parameters --------------------------------------------------------------------
    def role(self, name: str, tied: bool) -> Role:
        """The role of parameter ``name``; the LM head copies the embedding when tied."""
        for pattern, role in self.roles:
            if re.fullmatch(pattern, name):
                if isinstance(role, Role):
                    return role
                return Role("embedding", "D") if tied else Role("linear", None, "D")
        raise ValueError(
            f"parameter {name!r} has no bert2BERT role in the {self.name} adapter; the model "
            "has a layout this package does not know (a newer transformers version or a "
            "custom head)"
        )

    def layer_of(self, name: str) -> int | None:
        """The block index of parameter ``name`` (None outside the blocks)."""
        m = re.match(re.escape(self.layers_path) + r"\.(\d+)\.", name)
        return int(m.group(1)) if m else None

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        parent, _, child = self.layers_path.rpartition(".")
        setattr(model.get_submodule(parent), child, layers)


def _bert_like(name: str, base: str, head: str, transform_ln: str) -> ArchAdapter:
    lay = rf"{base}\.encoder\.layer\.\d+"
    roles: tuple[tuple[str, Role | str], ...] = (
        (
            rf"{base}\.embeddings\.(word|position|token_type)_embeddings\.weight",
            Role("embedding", "D"),
        ),
        (rf"{base}\.embeddings\.LayerNorm\.(weight|bias)", Role("vector", "D")),
        (rf"{lay}\.attention\.self\.(query|key|value)\.weight", Role("linear", "H", "D")),
        (rf"{lay}\.attention\.self\.(query|key|value)\.bias", Role("vector", "H")),
        (rf"{lay}\.attention\.output\.dense\.weight", Role("linear", "D", "H")),
        (
            rf"{lay}\.(attention\.output|output)\.(dense\.bias|LayerNorm\.(weight|bias))",
            Role("vector", "D"),
        ),
        (rf"{lay}\.intermediate\.dense\.weight", Role("linear", "F", "D")),
        (rf"{lay}\.intermediate\.dense\.bias", Role("vector", "F")),
        (rf"{lay}\.output\.dense\.weight", Role("linear", "D", "F")),
        (rf"{head}\.(transform\.)?dense\.weight", Role("linear", "D", "D")),
        (rf"{head}\.(transform\.)?dense\.bias", Role("vector", "D")),
        (rf"{head}\.{transform_ln}\.(weight|bias)", Role("vector", "D")),
        (rf"{head}\.decoder\.weight", HEAD),
        (rf"{head}\.(decoder\.)?bias", Role("vector", None)),
    )
    return ArchAdapter(
        name=name,
        model_types=(name,),
        layers_path=f"{base}.encoder.layer",
        head_weight=f"{head}.decoder.weight".replace("\\", ""),
        embedding_weight=f"{base}.embeddings.word_embeddings.weight",
        roles=roles,
        head_modules=(head.replace("\\", ""),),
    )


# BertForMaskedLM: bert.* + cls.predictions.{transform.dense, transform.LayerNorm, decoder}.
BERT = _bert_like("bert", "bert", r"cls\.predictions", r"transform\.LayerNorm")
# RobertaForMaskedLM: roberta.* + lm_head.{dense, layer_norm, decoder}.
ROBERTA = _bert_like("roberta", "roberta", "lm_head", "layer_norm")

_G = r"transformer\.h\.\d+"
GPT2 = ArchAdapter(
    name="gpt2",
    model_types=("gpt2",),
    layers_path="transformer.h",
    head_weight="lm_head.weight",
    embedding_weight="transformer.wte.weight",
    roles=(
        (r"transformer\.(wte|wpe)\.weight", Role("embedding", "D")),
        (rf"({_G}\.ln_[12]|transformer\.ln_f)\.(weight|bias)", Role("vector", "D")),
        # Conv1D stores [in, out]; c_attn's out axis is q | k | v, each H heads x head_dim.
        (rf"{_G}\.attn\.c_attn\.weight", Role("conv1d", "3H", "D")),
        (rf"{_G}\.attn\.c_attn\.bias", Role("vector", "3H")),
        (rf"{_G}\.attn\.c_proj\.weight", Role("conv1d", "D", "H")),
        (rf"{_G}\.(attn|mlp)\.c_proj\.bias", Role("vector", "D")),
        (rf"{_G}\.mlp\.c_fc\.weight", Role("conv1d", "F", "D")),
        (rf"{_G}\.mlp\.c_fc\.bias", Role("vector", "F")),
        (rf"{_G}\.mlp\.c_proj\.weight", Role("conv1d", "D", "F")),
        (r"lm_head\.weight", HEAD),
    ),
    head_modules=("transformer.ln_f", "lm_head"),
)

_L = r"model\.layers\.\d+"
LLAMA = ArchAdapter(
    name="llama",
    model_types=("llama",),
    layers_path="model.layers",
    head_weight="lm_head.weight",
    embedding_weight="model.embed_tokens.weight",
    roles=(
        (r"model\.embed_tokens\.weight", Role("embedding", "D")),
        (rf"({_L}\.(input|post_attention)_layernorm|model\.norm)\.weight", Role("vector", "D")),
        (rf"{_L}\.self_attn\.q_proj\.weight", Role("linear", "H", "D")),
        (rf"{_L}\.self_attn\.q_proj\.bias", Role("vector", "H")),
        (rf"{_L}\.self_attn\.(k|v)_proj\.weight", Role("linear", "KV", "D")),
        (rf"{_L}\.self_attn\.(k|v)_proj\.bias", Role("vector", "KV")),
        (rf"{_L}\.self_attn\.o_proj\.weight", Role("linear", "D", "H")),
        (rf"{_L}\.(self_attn\.o_proj|mlp\.down_proj)\.bias", Role("vector", "D")),
        (rf"{_L}\.mlp\.(gate|up)_proj\.weight", Role("linear", "F", "D")),
        (rf"{_L}\.mlp\.(gate|up)_proj\.bias", Role("vector", "F")),
        (rf"{_L}\.mlp\.down_proj\.weight", Role("linear", "D", "F")),
        (r"lm_head\.weight", HEAD),
    ),
    head_modules=("model.norm", "lm_head"),
)

ADAPTERS: dict[str, ArchAdapter] = {
    "BertForMaskedLM": BERT,
    "RobertaForMaskedLM": ROBERTA,
    "GPT2LMHeadModel": GPT2,
    "LlamaForCausalLM": LLAMA,
}
"""The supported architectures: transformers class name to its parameter-role adapter."""
_BY_MODEL_TYPE = {a.name: a for a in ADAPTERS.values()}


def adapter_for(model: Any) -> ArchAdapter:
    """The adapter of ``model`` (TypeError naming the supported classes otherwise)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a transformers model (nn.Module), got {type(model).__name__}"
        )
    for cls in type(model).__mro__:
        if cls.__name__ in ADAPTERS and cls.__module__.startswith("transformers."):
            return ADAPTERS[cls.__name__]
    raise TypeError(
        f"unsupported architecture {type(model).__name__}; bert2bert supports {', '.join(ADAPTERS)}"
    )


def adapter_for_config(config: Any) -> ArchAdapter:
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise TypeError(
            f"unsupported config (model_type={model_type!r}); bert2bert supports model types "
            f"{', '.join(sorted(_BY_MODEL_TYPE))}"
        )
    return _BY_MODEL_TYPE[model_type]


# Config fields that must agree between source and target (everything that is not a size).
_MUST_MATCH = (
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "type_vocab_size",
    "hidden_act",
    "activation_function",
    "position_embedding_type",
    "rope_theta",
    "rope_parameters",
    "attention_bias",
    "mlp_bias",
)


def check_configs_match(small_config: Any, big_config: Any) -> None:
    """ValueError naming the first field (not a size) where the two configs disagree."""
    a = adapter_for_config(small_config)
    if getattr(big_config, "model_type", None) != a.name:
        raise ValueError(
            f"mismatched configs: model_type {a.name!r} (source) vs "
            f"{getattr(big_config, 'model_type', None)!r} (target)"
        )
    for field in _MUST_MATCH:
        x, y = getattr(small_config, field, None), getattr(big_config, field, None)
        if x != y:
            raise ValueError(
                f"mismatched configs: {field} is {x!r} in the source, {y!r} in the target"
            )
