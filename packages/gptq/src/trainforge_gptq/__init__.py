"""trainforge-gptq: GPTQ post-training quantization (Frantar et al., ICLR 2023).

Layer level: :class:`GPTQ` (``add_batch`` then ``quantize``) and :func:`rtn_quantize`;
model level: :func:`quantize_model`; inference: :class:`GPTQLinear` over packed
"gptq" / "gptq_v2" buffers, :func:`save_quantized` / :func:`load_quantized` and
:func:`to_hf_state_dict`.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_gptq.gptq import (
    GPTQ,
    LLAMA_SEQUENTIAL,
    GPTQConfig,
    QuantResult,
    damped_inverse_cholesky,
    gptq_quantize,
    rtn_quantize,
)
from trainforge_gptq.model import (
    LayerReport,
    QuantizeReport,
    export_config,
    find_blocks,
    quantize_model,
    to_hf_state_dict,
)
from trainforge_gptq.packing import codes_per_run, pack, unpack, zero_offset
from trainforge_gptq.qlinear import GPTQLinear, load_quantized, save_quantized
from trainforge_gptq.quantizer import SUPPORTED_BITS, find_params

try:
    __version__ = version("trainforge-gptq")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "GPTQ",
    "LLAMA_SEQUENTIAL",
    "SUPPORTED_BITS",
    "GPTQConfig",
    "GPTQLinear",
    "LayerReport",
    "QuantResult",
    "QuantizeReport",
    "__version__",
    "codes_per_run",
    "damped_inverse_cholesky",
    "export_config",
    "find_blocks",
    "find_params",
    "gptq_quantize",
    "load_quantized",
    "pack",
    "quantize_model",
    "rtn_quantize",
    "save_quantized",
    "to_hf_state_dict",
    "unpack",
    "zero_offset",
]
