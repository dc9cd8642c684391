"""PS3 under DistributedDataParallel on 2 gloo ranks: one training step (box-forced look, box
BCE on the prior and posterior maps, a loss on the box-pooled tokens, text prompts through
``prompt_proj``) gives every rank the gradients of one process on the global batch."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from trainforge_core.distributed import run_on_ranks
from trainforge_ps3_vision import PS3Config, apply_ps3, box_supervision_loss, boxes_to_map

pytestmark = pytest.mark.distributed

N = 2  # images per rank


def _encoder():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, class_token=False,
        global_pool="map", img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2,
    )  # fmt: skip
    cfg = PS3Config(scales=(16, 32, 64), max_select=40, highres_cue=False, prompt_dim=12)
    return apply_ps3(vit, cfg).double().train()


def _batch(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(N, 3, 64, 64, generator=gen, dtype=torch.float64)
    text = torch.randn(N, 12, generator=gen, dtype=torch.float64)
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [32.0, 16.0, 56.0, 40.0]])[:N]
    return x, text, boxes_to_map(boxes + 4 * rank, 64, 64).double()


class _Step(nn.Module):
    """One pre-training step's loss inside a ``forward``: DDP needs every use of a parameter
    (here ``box_pool``'s attention-pool head) in the wrapped module's forward."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, x, text, box):
        out = self.enc(x, budget=12, prompt=text, gt_map=box)
        bce = box_supervision_loss(out.prior_probs, box) + box_supervision_loss(
            out.posterior_probs, box
        )
        return bce + self.enc.box_pool(out, box).pow(2).mean()


def _grads(enc):
    return {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}


def _rank(rank, world_size):
    enc = _encoder()
    ddp = nn.parallel.DistributedDataParallel(_Step(enc), find_unused_parameters=True)
    ddp(*_batch(rank)).backward()
    return _grads(enc)


def test_ddp_step_equals_one_process_on_the_global_batch():
    ranks = run_on_ranks(_rank, 2)
    enc = _encoder()
    (x0, t0, b0), (x1, t1, b1) = _batch(0), _batch(1)
    # per-rank means of equal shards, averaged by DDP = the mean of the two halves' losses
    step = _Step(enc)
    loss = (step(x0, t0, b0) + step(x1, t1, b1)) / 2
    loss.backward()
    want = _grads(enc)
    assert "prompt_proj.fc1.weight" in want and "selection_feature_proj.fc1.weight" in want
    for got in ranks:
        assert got.keys() == want.keys()
        for name, g in got.items():
            torch.testing.assert_close(g, want[name], rtol=1e-9, atol=1e-12, msg=name)
