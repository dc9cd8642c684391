"""`GroupedOptimizer`: several torch optimisers stepped as one (Muon + AdamW, Scion + Signum).

``param_groups`` is the list of the children's own group dicts, so learning-rate schedulers
(``torch.optim.lr_scheduler``) and gradient clipping see and change every group, and each
group keeps its own base learning rate (the AdamW groups at ``adam_lr_ratio`` times the
matrix rate). ``state_dict`` nests the children's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class GroupedOptimizer(torch.optim.Optimizer):
    """Step ``optimizers`` (name -> optimiser) together as one ``torch.optim.Optimizer``."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        if not isinstance(optimizers, dict) or not optimizers:
            raise ValueError("optimizers must be a non-empty dict of name -> torch.optim.Optimizer")
        for name, opt in optimizers.items():
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"optimizers[{name!r}] is a {type(opt).__name__}, not an Optimizer")
        params = [p for o in optimizers.values() for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.optimizers = dict(optimizers)
        # Share the children's group dicts: schedulers and clipping act on them directly.
        self.param_groups = [g for o in self.optimizers.values() for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers.values():
            opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"optimizers": {name: o.state_dict() for name, o in self.optimizers.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if not isinstance(state_dict, dict) or "optimizers" not in state_dict:
            raise ValueError("state_dict must come from GroupedOptimizer.state_dict()")
        saved = state_dict["optimizers"]
        if set(saved) != set(self.optimizers):
            raise ValueError(
                f"state_dict holds optimizers {sorted(saved)}, "
                f"this one has {sorted(self.optimizers)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(saved[name])
        self.param_groups = [g for o in self.optimizers.values() for g in o.param_groups]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if getattr(self, "optimizers", None) is None:  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        raise NotImplementedError("add a group to one of GroupedOptimizer.optimizers instead")
