"""transformers integration: ``from_pretrained`` of GPTQ checkpoints through this package.

``quantize_model`` records the ``quantization_config`` (``quant_method: "gptq"``, the
field names of transformers' and GPTQModel's ``GPTQConfig``) on ``model.config``, so
``model.save_pretrained(path)`` writes a standard GPTQ checkpoint: ``config.json`` with that
entry and ``qweight / qzeros / scales / g_idx`` tensors per quantized linear, the layout
GPTQModel writes and reads. transformers loads such a checkpoint through its ``gptq``
quantizer, which needs ``optimum`` and ``gptqmodel``; when either is missing, importing
``trainforge_gptq`` registers :class:`TrainforgeGptqHfQuantizer` under ``"gptq"`` instead,
so ``AutoModelForCausalLM.from_pretrained(path)`` rebuilds the quantized linears as
:class:`~trainforge_gptq.GPTQLinear` (``register_quantizer(force=True)`` uses it even
where GPTQModel is installed).

The registration waits for transformers' own import (a post-import hook), so importing this
package does not import transformers.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from typing import Any

import torch

log = logging.getLogger(__name__)
_AUTO = "transformers.quantizers.auto"
_CLASS: Any = None


def _quantizer_class() -> Any:
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    from transformers.quantizers.base import HfQuantizer

    class TrainforgeGptqHfQuantizer(HfQuantizer):
        """Loads pre-quantized GPTQ checkpoints (v1 ``gptq`` and ``gptq_v2``) into
        :class:`~trainforge_gptq.GPTQLinear` modules; quantizing on load is not done here
        (use :func:`trainforge_gptq.quantize_model`, then ``save_pretrained``)."""

        requires_calibration = True

        def __init__(self, quantization_config: Any, **kwargs: Any) -> None:
            super().__init__(quantization_config, **kwargs)

        def validate_environment(self, *args: Any, **kwargs: Any) -> None:
            return None

        def _qcfg(self) -> dict[str, Any]:
            from trainforge_gptq.qlinear import read_checkpoint_config

            qc = self.quantization_config
            return read_checkpoint_config(qc if isinstance(qc, dict) else qc.to_dict())

        def _process_model_before_weight_loading(self, model: Any, **kwargs: Any) -> None:
            from safetensors import safe_open

            from trainforge_gptq.model import _replace_with_empty

            qcfg = self._qcfg()
            keys: set[str] = set()
            for f in kwargs.get("checkpoint_files") or ():
                if str(f).endswith(".safetensors"):
                    with safe_open(str(f), framework="pt") as fh:
                        keys.update(fh.keys())
            modules = sorted(k.removesuffix(".qweight") for k in keys if k.endswith(".qweight"))
            biased = {m for m in modules if f"{m}.bias" in keys}
            _replace_with_empty(model, qcfg, "auto", modules, biased)
            self._modules = modules
            self._no_g_idx = [m for m in modules if f"{m}.g_idx" not in keys]
            _guard_init(model)

        def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> None:
            from trainforge_gptq.qlinear import GPTQLinear

            for m in model.modules():
                m.__dict__.pop("_init_weights", None)  # the guard of _guard_init
            for name in getattr(self, "_no_g_idx", []):  # optional without act-order
                m = model.get_submodule(name)
                gs = m.in_features if m.group_size == -1 else m.group_size
                g_idx = (torch.arange(m.in_features) // gs).to(torch.int32)
                m.g_idx = g_idx.to(m.qweight.device)
            for m in model.modules():  # scales and bias are stored fp16 (as GPTQLinear makes them)
                if isinstance(m, GPTQLinear):
                    m.scales = m.scales.to(torch.float16)
                    if m.bias is not None:
                        m.bias = m.bias.to(torch.float16)
            qcfg = self._qcfg()
            qcfg.setdefault("trainforge", {})["modules"] = list(getattr(self, "_modules", []))
            model.gptq_quantization_config = qcfg

        @property
        def is_trainable(self) -> bool:
            return False

        def is_serializable(self, *args: Any, **kwargs: Any) -> bool:
            return True

    _CLASS = TrainforgeGptqHfQuantizer
    return _CLASS


def _guard_init(model: Any) -> None:
    """transformers initialises missing weights module by module after loading; some
    ``_init_weights`` reach into children (GPT-2 rescales ``c_proj.weight``), which a
    GPTQLinear does not have. Their weights come from the checkpoint, so a module with a
    GPTQLinear child is skipped (until loading ends)."""
    from transformers import PreTrainedModel

    from trainforge_gptq.qlinear import GPTQLinear

    for sub in model.modules():
        if isinstance(sub, PreTrainedModel):
            original = sub._init_weights

            def guarded(module: Any, original: Any = original) -> None:
                if not any(isinstance(c, GPTQLinear) for c in module.children()):
                    original(module)

            sub._init_weights = guarded


def _gptqmodel_usable() -> bool:
    return all(importlib.util.find_spec(n) is not None for n in ("optimum", "gptqmodel"))


def register_quantizer(force: bool = False) -> bool:
    """Make transformers load ``quant_method: "gptq"`` checkpoints with this package.

    Without ``force`` this happens only where transformers' own GPTQ path cannot run
    (``optimum`` or ``gptqmodel`` missing). Returns whether ours is registered now."""
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False, got {force!r}")
    from transformers.quantizers import auto

    cls = _quantizer_class()
    if auto.AUTO_QUANTIZER_MAPPING.get("gptq") is cls:
        return True
    if force or not _gptqmodel_usable():
        auto.AUTO_QUANTIZER_MAPPING["gptq"] = cls
        return True
    return False


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`register_quantizer` right after ``transformers.quantizers.auto`` loads."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _AUTO:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_register(module: Any) -> None:
            exec_module(module)
            try:
                register_quantizer()
            except Exception:  # never break transformers' own import
                log.warning("trainforge_gptq: could not register the GPTQ loader", exc_info=True)

        loader.exec_module = exec_and_register  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Register now if transformers' quantizers are loaded, else once they are."""
    if _AUTO in sys.modules:
        register_quantizer()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())
