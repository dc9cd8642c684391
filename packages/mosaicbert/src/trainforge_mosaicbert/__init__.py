"""trainforge-mosaicbert: MosaicBERT, a BERT that pre-trains fast (arXiv:2312.17482).

ALiBi instead of learned positions, a GeGLU feed-forward block, unpadded execution over the
real tokens only, a masked-tokens-only MLM head, low-precision LayerNorm and FlashAttention /
FlexAttention / SDPA backends, as transformers ``PreTrainedModel``s registered with the Auto
classes (``model_type="mosaic_bert"``), plus the paper's training recipe.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_mosaicbert.alibi import alibi_bias, alibi_slopes
from trainforge_mosaicbert.attention import (
    ATTN_IMPLS,
    flash_attn_available,
    flex_attention_available,
    resolve_attn_impl,
)
from trainforge_mosaicbert.configuration import MosaicBertConfig
from trainforge_mosaicbert.data import (
    VerseMLMData,
    kjv_verse_mlm_data,
    kjv_verses,
    mlm_mask,
    pad_vocab,
)
from trainforge_mosaicbert.layernorm import LowPrecisionLayerNorm
from trainforge_mosaicbert.modeling import (
    MosaicBertForMaskedLM,
    MosaicBertForSequenceClassification,
    MosaicBertModel,
    MosaicBertPreTrainedModel,
)
from trainforge_mosaicbert.padding import pad_input, unpad_input
from trainforge_mosaicbert.recipe import MosaicRecipe, linear_warmup_decay, mosaic_recipe

try:
    __version__ = version("trainforge-mosaicbert")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "ATTN_IMPLS",
    "LowPrecisionLayerNorm",
    "MosaicBertConfig",
    "MosaicBertForMaskedLM",
    "MosaicBertForSequenceClassification",
    "MosaicBertModel",
    "MosaicBertPreTrainedModel",
    "MosaicRecipe",
    "VerseMLMData",
    "__version__",
    "alibi_bias",
    "alibi_slopes",
    "flash_attn_available",
    "flex_attention_available",
    "kjv_verse_mlm_data",
    "kjv_verses",
    "linear_warmup_decay",
    "mlm_mask",
    "mosaic_recipe",
    "pad_input",
    "pad_vocab",
    "resolve_attn_impl",
    "unpad_input",
]
