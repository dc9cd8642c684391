"""Sophia's Hessian helper on 2 gloo ranks equals one process on the global batch: the
predictions are counted over every rank (bs) and the ranks' estimates are one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainforge_core.distributed import run_on_ranks
from trainforge_sophia import SophiaG, SophiaH, maybe_update_hessian

pytestmark = pytest.mark.distributed

D, C, N = 6, 4, 8  # features, classes, examples per rank


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(D, C, dtype=torch.float64)


def _batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(N, D, generator=gen, dtype=torch.float64), torch.zeros(N, dtype=torch.long)


def _logits(model, batch):
    x, _ = batch
    # Peaked logits: the sampled labels are the argmax with probability ~1, so every rank's
    # draws match the single process's whatever the generator.
    return 1e3 * model(x), None


def _sophia_g(rank, world_size, wrap):
    model = _model()
    opt = SophiaG(model.parameters(), bs=None)
    target = nn.parallel.DistributedDataParallel(model) if wrap else model
    maybe_update_hessian(opt, target, _batch(rank), logits_fn=_logits, grad_clip=None, force=True)
    group = opt.param_groups[0]
    return group["n_predictions"], [opt.state[p]["hessian"] for p in model.parameters()]


def _sophia_h(rank, world_size):
    model = _model()
    opt = SophiaH(model.parameters(), n_samples=2)

    def loss_fn(m, batch):
        x, _ = batch
        return (m(x) ** 2).mean() + (m(x) ** 3).mean()

    maybe_update_hessian(
        opt, model, _batch(rank), loss_fn=loss_fn, generator=torch.Generator().manual_seed(7),
        force=True,
    )  # fmt: skip
    return [opt.state[p]["hessian"] for p in model.parameters()]


@pytest.mark.parametrize("wrap", [False, True], ids=["plain", "ddp"])
def test_gnb_counts_every_ranks_predictions_and_agrees_with_one_process(wrap):
    ranks = run_on_ranks(_sophia_g, 2, wrap)
    model = _model()
    opt = SophiaG(model.parameters(), bs=None)
    maybe_update_hessian(opt, model, [_batch(0), _batch(1)], logits_fn=_logits,
                         grad_clip=None, force=True)  # fmt: skip
    want = [opt.state[p]["hessian"] for p in model.parameters()]
    for n_pred, hessians in ranks:
        assert n_pred == 2 * N  # used to be N: the clip threshold world-size times too small
        for got, ref in zip(hessians, want, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def test_hutchinson_estimate_is_one_across_ranks():
    a, b = run_on_ranks(_sophia_h, 2)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)  # used to differ per rank
