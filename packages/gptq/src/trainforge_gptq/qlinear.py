"""``GPTQLinear``: an inference linear layer over packed GPTQ buffers, and checkpoint I/O.

Buffers (``AutoGPTQ:auto_gptq/nn_modules/qlinear/qlinear_tritonv2.py``): ``qweight``
int32 ``[in * bits / 32, out]``, ``qzeros`` int32 ``[n_groups, out * bits / 32]``, ``scales``
fp16 ``[n_groups, out]``, ``g_idx`` int32 ``[in]`` and an fp16 ``bias`` when the source layer
has one. ``checkpoint_format="gptq"`` (v1) stores ``zero - 1`` (``zeros -= 1`` in AutoGPTQ's
``pack``); ``"gptq_v2"`` stores the zero itself.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainforge_gptq.gptq import QuantResult, weight_matrix
from trainforge_gptq.packing import codes_per_run, pack, zero_offset
from trainforge_gptq.quantizer import check_bits

log = logging.getLogger(__name__)
_BACKENDS = ("auto", "torch", "triton")


def _ops() -> Any:
    import trainforge_kernels.gptq_dequant as ops  # registers the custom ops

    return ops


class GPTQLinear(nn.Module):
    """A linear layer whose weight is stored packed (``y = x W^T + b``).

    ``backend``: ``"auto"`` runs the ``trainforge::gptq_matmul`` op (Triton on CUDA when
    available, else the torch reference); ``"torch"`` always dequantizes with the torch
    reference; ``"triton"`` forces the Triton kernels.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int = -1,
        bias: bool = False,
        checkpoint_format: str = "gptq",
        backend: str = "auto",
        sym: bool = True,
    ) -> None:
        super().__init__()
        check_bits(bits)
        zero_offset(checkpoint_format)
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        run = codes_per_run(bits)
        if in_features % run or out_features % run:
            raise ValueError(
                f"{bits}-bit packing needs in_features ({in_features}) and out_features "
                f"({out_features}) to be multiples of {run}"
            )
        if not (group_size == -1 or (isinstance(group_size, int) and group_size > 0)):
            raise ValueError(f"group_size must be -1 or a positive integer, got {group_size!r}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size, self.sym = bits, group_size, sym
        self.checkpoint_format, self.backend = checkpoint_format, backend
        gs = in_features if group_size == -1 else group_size
        n_groups = -(-in_features // gs)
        words = run * bits // 32
        self.register_buffer(
            "qweight", torch.zeros(in_features // run * words, out_features, dtype=torch.int32)
        )
        self.register_buffer(
            "qzeros", torch.zeros(n_groups, out_features // run * words, dtype=torch.int32)
        )
        self.register_buffer("scales", torch.zeros(n_groups, out_features, dtype=torch.float16))
        self.register_buffer("g_idx", (torch.arange(in_features) // gs).to(torch.int32))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float16))
        else:
            self.bias = None

    @property
    def zero_offset(self) -> int:
        return zero_offset(self.checkpoint_format)

    @classmethod
    def from_result(
        cls,
        layer: nn.Module,
        result: QuantResult,
        backend: str = "auto",
        checkpoint_format: str = "gptq",
    ) -> GPTQLinear:
        """Pack a :class:`QuantResult` of ``layer`` (Linear or Conv1D; the bias is copied)."""
        if not isinstance(result, QuantResult):
            raise TypeError(f"result must be a QuantResult, got {type(result).__name__}")
        if result.layer_kind == "conv2d" or isinstance(layer, nn.Conv2d):
            raise ValueError("GPTQLinear packs Linear / Conv1D layers; keep Conv2d fake-quantized")
        w = weight_matrix(layer)
        if tuple(result.Q.shape) != tuple(w.shape):
            raise ValueError(
                f"result is for a {tuple(result.Q.shape)} weight, the layer has {tuple(w.shape)}"
            )
        out_f, in_f = w.shape
        bias = getattr(layer, "bias", None)
        m = cls(
            in_f,
            out_f,
            result.bits,
            result.group_size,
            bias is not None,
            checkpoint_format,
            backend,
            result.sym,
        )
        m.load_result(result)
        if bias is not None:
            m.bias = bias.detach().to(torch.float16).clone()
        return m.to(w.device)

    @torch.no_grad()
    def load_result(self, result: QuantResult) -> None:
        """Fill the packed buffers from ``result`` (codes are packed as they are, not
        recomputed from ``Q``)."""
        maxq = 2**self.bits - 1
        zeros = result.zeros.round().to(torch.int64)
        stored = zeros - self.zero_offset
        if self.zero_offset and bool((zeros == 0).any()):
            warnings.warn(
                "checkpoint_format='gptq' (v1) stores zero - 1, so a zero point of 0 "
                f"({int((zeros == 0).sum())} here) wraps to {maxq} and loads as {maxq + 1}: "
                "the weights of those groups are wrong in every v1 loader. Use "
                "checkpoint_format='gptq_v2' (or sym=True) to store them exactly.",
                UserWarning,
                stacklevel=3,
            )
        stored = stored & maxq
        self.qweight = pack(result.qint.t().contiguous().to(torch.int64), self.bits, dim=0)
        self.qzeros = pack(stored, self.bits, dim=1)
        self.scales = result.scales.to(torch.float16).contiguous()
        self.g_idx = result.g_idx.to(torch.int32).contiguous()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight as ``[out, in]`` (as the source layer's ``nn.Linear`` weight)."""
        ops = _ops()
        w = ops.gptq_dequantize_reference(
            self.qweight, self.qzeros, self.scales, self.g_idx, self.bits, self.zero_offset
        )
        return w.t().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ops = _ops()
        args = (self.qweight, self.qzeros, self.scales, self.g_idx, self.bits, self.zero_offset)
        if self.backend == "torch":
            y = ops.gptq_matmul_reference(x, *args)
        elif self.backend == "triton":
            y = ops.gptq_matmul_triton(x, *args)
        else:
            y = torch.ops.trainforge.gptq_matmul(x, *args)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bits={self.bits}, group_size={self.group_size}, "
            f"checkpoint_format={self.checkpoint_format!r}, backend={self.backend!r}"
        )

    def packed_bytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers())


# Group sizes GPTQModel's portable kernels accept (``GPTQModel:gptqmodel/nn_modules/qlinear/
# torch.py`` and ``tritonv2.py``: ``SUPPORTS_GROUP_SIZE``; a group as wide as the layer is
# accepted too); its exllama / marlin kernels take only -1, 32, 64 and 128.
PORTABLE_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)
"""Group sizes GPTQModel's loaders accept; others warn (see :func:`check_portable_group_size`)."""


def check_portable_group_size(group_size: int, in_features: int | None = None) -> bool:
    """Warn (UserWarning) when GPTQModel's loaders would refuse ``group_size``; return
    whether it is portable. Our own loaders read every group size."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be an integer, got {group_size!r}")
    if group_size in PORTABLE_GROUP_SIZES or group_size == in_features:
        return True
    warnings.warn(
        f"group_size={group_size} packs and loads here, but GPTQModel (and transformers, which "
        f"loads GPTQ checkpoints through it) refuses it: its kernels take {PORTABLE_GROUP_SIZES} "
        "(exllama / marlin only -1, 32, 64, 128). Use one of those for a portable checkpoint.",
        UserWarning,
        stacklevel=3,
    )
    return False


def read_checkpoint_config(raw: Any) -> dict[str, Any]:
    """Check and normalise a GPTQ ``quantization_config`` / ``quantize_config.json`` dict as
    written by this package, GPTQModel (v1 ``"gptq"`` or ``"gptq_v2"`` checkpoints), AutoGPTQ
    or transformers; refuse settings this loader cannot read, with the reason."""
    if not isinstance(raw, dict):
        raise TypeError(f"quantization config must be a dict, got {type(raw).__name__}")
    qcfg = dict(raw)
    method = qcfg.get("quant_method", "gptq")
    method = str(getattr(method, "value", method)).lower()  # transformers' enum or a str
    if method != "gptq":
        raise ValueError(f"quant_method={method!r}: only GPTQ checkpoints ('gptq') load here")
    if "bits" not in qcfg:
        raise ValueError(f"quantization config has no 'bits' (keys {sorted(qcfg)})")
    check_bits(qcfg["bits"])
    gs = qcfg.get("group_size", -1)
    if isinstance(gs, bool) or not isinstance(gs, int) or not (gs == -1 or gs > 0):
        raise ValueError(f"group_size must be -1 or a positive integer, got {gs!r}")
    fmt = qcfg.get("checkpoint_format") or qcfg.get("format") or "gptq"
    fmt = str(getattr(fmt, "value", fmt)).lower()
    if fmt not in ("gptq", "gptq_v2"):
        raise ValueError(
            f"checkpoint_format={fmt!r} is a kernel-specific repacking (GPTQModel writes "
            "'marlin' / 'bitblas' / 'ipex' layouts that only it reads); only 'gptq' (v1) and "
            "'gptq_v2' load here. Re-save it with GPTQModel in the 'gptq' format."
        )
    pack_dtype = str(qcfg.get("pack_dtype", "int32")).removeprefix("torch.")
    if pack_dtype != "int32":
        raise ValueError(f"pack_dtype={pack_dtype!r}: only int32 packing loads here")
    if qcfg.get("dynamic"):
        raise ValueError(
            "the checkpoint has per-module 'dynamic' overrides (GPTQModel), which this loader "
            "does not read; every quantized module must share bits and group_size"
        )
    for flag in ("sym", "desc_act"):
        if not isinstance(qcfg.get(flag, False), bool):
            raise TypeError(f"{flag} must be true or false, got {qcfg[flag]!r}")
    qcfg.update(quant_method="gptq", group_size=gs, checkpoint_format=fmt)
    qcfg.setdefault("sym", True)
    qcfg.setdefault("desc_act", False)
    qcfg.pop("format", None)
    return qcfg


def quantization_config(model: nn.Module) -> dict[str, Any]:
    """The ``quantization_config`` dict recorded by :func:`quantize_model` on a model."""
    cfg = getattr(model, "gptq_quantization_config", None)
    if cfg is None:
        raise ValueError(
            "model carries no GPTQ quantization config (was it quantized "
            "with trainforge_gptq.quantize_model?)"
        )
    return dict(cfg)


def attach_config(model: nn.Module, qcfg: dict[str, Any]) -> None:
    """Record ``qcfg`` on the model, and on its transformers config so that
    ``save_pretrained`` writes it into ``config.json`` as GPTQModel checkpoints do."""
    model.gptq_quantization_config = dict(qcfg)  # type: ignore[assignment]
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        config.quantization_config = dict(qcfg)


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.safetensors`` (state dict, tied weights once) and
    ``quantize_config.json`` into directory ``path``; also the transformers config with a
    ``quantization_config`` entry when the model has one. Same tensors and config as
    ``model.save_pretrained(path)``."""
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    qcfg = quantization_config(model)
    check_portable_group_size(qcfg["group_size"])
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"path={str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    for k, v in model.state_dict().items():
        key = (v.data_ptr(), v.dtype, tuple(v.shape))
        if v.numel() and key in seen:
            continue  # tied weights (lm_head = embed_tokens) are stored once
        seen.add(key)
        state[k] = v.detach().contiguous().cpu()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "quantize_config.json").write_text(json.dumps(qcfg, indent=2) + "\n")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        d = config.to_dict()
        d["quantization_config"] = qcfg
        (out / "config.json").write_text(json.dumps(d, indent=2, default=str) + "\n")
    return out


def _weight_files(root: Path, qcfg: dict[str, Any]) -> list[Path]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / n for n in names]
    base = qcfg.get("model_file_base_name")  # AutoGPTQ: gptq_model-4bit-128g.safetensors
    if base and (root / f"{base}.safetensors").is_file():
        return [root / f"{base}.safetensors"]
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{str(root)!r} holds no .safetensors weights")
    return files


def read_config_file(root: Path) -> dict[str, Any]:
    """The GPTQ config of a checkpoint directory: ``quantize_config.json`` (ours, AutoGPTQ,
    GPTQModel) or the ``quantization_config`` entry of ``config.json`` (transformers)."""
    if (root / "quantize_config.json").is_file():
        return read_checkpoint_config(json.loads((root / "quantize_config.json").read_text()))
    if (root / "config.json").is_file():
        cfg = json.loads((root / "config.json").read_text())
        text = cfg.get("text_config") or {}
        raw = cfg.get("quantization_config") or text.get("quantization_config")
        if raw is not None:
            return read_checkpoint_config(raw)
    raise ValueError(
        f"{str(root)!r} is not a GPTQ checkpoint: no quantize_config.json and no "
        "quantization_config in config.json"
    )


def load_quantized(model: nn.Module, path: str | Path, backend: str = "auto") -> nn.Module:
    """Load a GPTQ checkpoint directory into ``model``, an unquantized instance of the same
    architecture: every module with a ``qweight`` in the checkpoint is replaced by an empty
    :class:`GPTQLinear`, then the state dict is loaded (strictly).

    Reads what :func:`save_quantized` and ``save_pretrained`` write, and GPTQModel /
    AutoGPTQ checkpoints in the v1 (``"gptq"``) and ``"gptq_v2"`` formats (config from
    ``quantize_config.json`` or ``config.json``; one or sharded ``.safetensors`` files)."""
    from safetensors.torch import load_file

    from trainforge_gptq.model import _replace_with_empty

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"path={str(root)!r} is not a checkpoint directory")
    qcfg = read_config_file(root)
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(root, qcfg):
        state.update(load_file(str(f)))
    modules = sorted(k.removesuffix(".qweight") for k in state if k.endswith(".qweight"))
    if modules:
        check_portable_group_size(qcfg["group_size"])
    _replace_with_empty(model, qcfg, backend, modules, {m for m in modules if f"{m}.bias" in state})
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    # Checkpoints without act-order may omit g_idx: GPTQLinear's default is arange // gs.
    tied |= {k for k in missing if k.endswith(".g_idx") and k[:-6] in modules}
    if set(missing) - tied or unexpected:
        raise ValueError(
            f"checkpoint does not match the model: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    qcfg.setdefault("trainforge", {})["modules"] = modules
    attach_config(model, qcfg)
    return model
