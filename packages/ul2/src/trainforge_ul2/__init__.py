"""trainforge-ul2: UL2's mixture of denoisers (arXiv:2205.05131) for any transformers model.

- :class:`Denoiser`, :class:`Mixture`, :data:`UL2_PAPER_MIXTURE` (the paper's 7 denoisers),
  :data:`T5_SPAN_CORRUPTION` (the baseline);
- T5's algorithms, vectorised: :func:`random_spans_noise_mask`,
  :func:`random_prefix_noise_mask`, :func:`span_corruption_lengths` (the length planner),
  :func:`noise_span_to_unique_sentinel`, :func:`denoise`;
- :class:`DataCollatorForUL2` (encoder-decoder or decoder-only with a prefix-LM mask) and
  :class:`UL2PackedDataset` (a packed stream cut at each denoiser's raw length).
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_ul2.collator import (
    DataCollatorForUL2,
    DenoiserPlan,
    add_ul2_tokens,
    denoise,
    expand_prefix_lm_mask,
    find_sentinel_ids,
    prefix_lm_attention_mask,
    sentinel_token,
)
from trainforge_ul2.dataset import UL2PackedDataset
from trainforge_ul2.denoisers import (
    MODE_TOKENS,
    T5_SPAN_CORRUPTION,
    UL2_PAPER_MIXTURE,
    Denoiser,
    Mixture,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    prefix_lm_lengths,
    random_prefix_noise_mask,
    random_spans_noise_mask,
    span_corruption_lengths,
)

try:
    __version__ = version("trainforge-ul2")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "MODE_TOKENS",
    "T5_SPAN_CORRUPTION",
    "UL2_PAPER_MIXTURE",
    "DataCollatorForUL2",
    "Denoiser",
    "DenoiserPlan",
    "Mixture",
    "UL2PackedDataset",
    "__version__",
    "add_ul2_tokens",
    "denoise",
    "expand_prefix_lm_mask",
    "find_sentinel_ids",
    "noise_span_to_unique_sentinel",
    "nonnoise_span_to_unique_sentinel",
    "prefix_lm_attention_mask",
    "prefix_lm_lengths",
    "random_prefix_noise_mask",
    "random_spans_noise_mask",
    "sentinel_token",
    "span_corruption_lengths",
]
