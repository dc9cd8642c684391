"""Byte counts of training state: parameters, gradients and optimizer state."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["optimizer_state_bytes", "training_state_bytes"]


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in ``optimizer.state`` tensors (e.g. Adam's two moments and step)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def training_state_bytes(model: nn.Module, adam: bool = True) -> dict[str, int]:
    """Analytic bytes of trainable parameters, their gradients and (``adam``) two Adam
    moments, plus buffers (SLTrain's supports), for ``model`` as it stands."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen: set[int] = set()
    params = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params += p.numel() * p.element_size()
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    state = {
        "parameters": params,
        "gradients": params,
        "optimizer": 2 * params if adam else 0,
        "buffers": buffers,
    }
    state["total"] = sum(state.values())
    return state
