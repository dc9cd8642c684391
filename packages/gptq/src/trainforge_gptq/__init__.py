"""trainforge-gptq: GPTQ post-training quantization (Frantar et al., ICLR 2023).

Layer level: :class:`GPTQ` (``add_batch`` then ``quantize``) and :func:`rtn_quantize`;
model level: :func:`quantize_model`; inference: :class:`GPTQLinear` over packed
"gptq" / "gptq_v2" buffers, :func:`save_quantized` / :func:`load_quantized` (also
GPTQModel / AutoGPTQ checkpoints), :func:`to_hf_state_dict`; a quantized transformers model
round-trips through ``save_pretrained`` / ``from_pretrained`` (:mod:`trainforge_gptq.hf`).
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
from trainforge_gptq.hf import install as _install_hf_quantizer
from trainforge_gptq.hf import register_quantizer
from trainforge_gptq.model import (
    LayerReport,
    QuantizeReport,
    export_config,
    find_blocks,
    quantize_model,
    to_hf_state_dict,
)
from trainforge_gptq.packing import codes_per_run, pack, unpack, zero_offset
from trainforge_gptq.qlinear import (
    PORTABLE_GROUP_SIZES,
    GPTQLinear,
    check_portable_group_size,
    load_quantized,
    read_checkpoint_config,
    save_quantized,
)
from trainforge_gptq.quantizer import SUPPORTED_BITS, find_params

try:
    __version__ = version("trainforge-gptq")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

_install_hf_quantizer()  # from_pretrained of "gptq" checkpoints (see trainforge_gptq.hf)

__all__ = [
    "GPTQ",
    "LLAMA_SEQUENTIAL",
    "PORTABLE_GROUP_SIZES",
    "SUPPORTED_BITS",
    "GPTQConfig",
    "GPTQLinear",
    "LayerReport",
    "QuantResult",
    "QuantizeReport",
    "__version__",
    "check_portable_group_size",
    "codes_per_run",
    "damped_inverse_cholesky",
    "export_config",
    "find_blocks",
    "find_params",
    "gptq_quantize",
    "load_quantized",
    "pack",
    "quantize_model",
    "read_checkpoint_config",
    "register_quantizer",
    "rtn_quantize",
    "save_quantized",
    "to_hf_state_dict",
    "unpack",
    "zero_offset",
]
