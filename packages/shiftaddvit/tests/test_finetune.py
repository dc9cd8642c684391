"""two_stage_finetune: stage 1 attention only, stage 2 MoE linears with the balance loss."""

from __future__ import annotations

import timm
import torch
from torch import nn

from trainforge_shiftaddvit import (
    AddLinearAttention,
    MultShiftMoE,
    ShiftAddConfig,
    two_stage_finetune,
)


def test_two_stages_convert_in_order_and_train():
    torch.manual_seed(0)
    model = timm.models.VisionTransformer(
        img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=16, depth=1,
        num_heads=2, mlp_ratio=2,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))]
    seen = []

    def loss_fn(m, batch):
        seen.append(
            (
                isinstance(m.blocks[0].attn, AddLinearAttention),
                isinstance(m.blocks[0].mlp.fc1, MultShiftMoE),
            )
        )
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    result = two_stage_finetune(
        model, batches, loss_fn, 2, 3, config=ShiftAddConfig(topk=4, anchors=8, ksh_iters=2)
    )
    assert seen == [(True, False)] * 2 + [(True, True)] * 3
    assert result.stage1.attention == ["blocks.0.attn"] and not result.stage1.moe
    assert len(result.stage2.moe) == 5 and not result.stage2.attention
    assert len(result.stage1_losses) == 2 and len(result.stage2_losses) == 3
    assert all(b > 0 for b in result.stage2_balance)  # the latency-aware loss is active
    assert not model.training
