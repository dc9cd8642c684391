"""Low-precision LayerNorm: under autocast, normalise in the autocast dtype (bf16 / fp16)
instead of fp32, as Composer's ``LowPrecisionLayerNorm`` algorithm does
(``mosaicml/composer:composer/algorithms/low_precision_layernorm``). Outside autocast it is
an ordinary ``nn.LayerNorm``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LowPrecisionLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` that, under ``torch.autocast``, casts input, weight and bias to the
    autocast dtype and runs ``layer_norm`` with autocast off (autocast would run it in fp32).
    Same parameters and state_dict as ``nn.LayerNorm``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().forward(x)
        dtype = torch.get_autocast_dtype(device_type)
        weight = self.weight.to(dtype) if self.weight is not None else None
        bias = self.bias.to(dtype) if self.bias is not None else None
        with torch.autocast(device_type=device_type, enabled=False):
            return F.layer_norm(x.to(dtype), self.normalized_shape, weight, bias, self.eps)
