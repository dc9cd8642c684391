"""Toy residual stacks shared by the tinyfusion tests (imported by path: the suite also
runs with --import-mode=importlib)."""

from __future__ import annotations

import torch
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.fc2(torch.tanh(self.fc1(x)))


class ResStack(nn.Module):
    """x -> blocks (residual MLPs) -> head; ``blocks`` is the stack TinyFusion prunes."""

    def __init__(self, scales: list[float], width: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ResBlock(width, s) for s in scales])
        self.head = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)
