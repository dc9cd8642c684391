"""SubBatchNorm against per-group BN, full-batch BN and a float64 aggregate."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_multigrid_video import (
    SubBatchNorm2d,
    SubBatchNorm3d,
    aggregate_sub_bn,
    convert_to_sub_bn,
    set_num_splits,
)


def _randomise_affine(m):
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(
    ("cls", "shape"), [(SubBatchNorm3d, (12, 5, 3, 4, 4)), (SubBatchNorm2d, (12, 5, 6, 6))]
)
def test_train_output_equals_per_group_bn(cls, shape):
    torch.manual_seed(0)
    k = 3
    m = cls(5, num_splits=k)
    _randomise_affine(m)
    x = torch.randn(*shape) * 2 + 1
    y = m(x)
    view = (1, -1) + (1,) * (len(shape) - 2)
    for j in range(k):
        g = x[j::k].double()
        dims = [0, *range(2, len(shape))]
        mu = g.mean(dims, keepdim=True)
        var = g.var(dims, unbiased=False, keepdim=True)
        ref = (g - mu) / torch.sqrt(var + 1e-5) * m.weight.double().view(
            view
        ) + m.bias.double().view(view)
        assert torch.allclose(y[j::k].double(), ref, atol=1e-5)


def test_aggregated_stats_match_full_batch_bn():
    torch.manual_seed(1)
    c, k = 4, 4
    sub = SubBatchNorm3d(c, num_splits=k)
    full = nn.BatchNorm3d(c)
    means = torch.tensor([0.0, 1.0, -2.0, 3.0]).view(1, c, 1, 1, 1)
    stds = torch.tensor([1.0, 0.5, 2.0, 3.0]).view(1, c, 1, 1, 1)
    for _ in range(50):
        x = torch.randn(16, c, 2, 3, 3) * stds + means
        sub(x)
        full(x)
    sub.eval()  # aggregates
    assert torch.allclose(sub.running_mean, full.running_mean, atol=0.1 * stds.flatten().max())
    rel = (sub.running_var - full.running_var).abs() / full.running_var
    assert rel.max() < 0.10, rel


def test_aggregate_formula_float64_and_eval_equals_batchnorm3d():
    torch.manual_seed(2)
    c, k = 3, 2
    m = SubBatchNorm3d(c, num_splits=k)
    _randomise_affine(m)
    for _ in range(5):
        m(
            torch.randn(8, c, 2, 4, 4) * torch.arange(1, c + 1).view(1, c, 1, 1, 1)
            + torch.arange(c).view(1, c, 1, 1, 1)
        )
    sm = m.split_running_mean.double().view(k, c)
    sv = m.split_running_var.double().view(k, c)
    mu = sum(sm[j] for j in range(k)) / k
    var = sum(sv[j] for j in range(k)) / k + sum((sm[j] - mu) ** 2 for j in range(k)) / k
    assert aggregate_sub_bn(m) == 1
    assert torch.allclose(m.running_mean.double(), mu, atol=1e-6)
    assert torch.allclose(m.running_var.double(), var, atol=1e-6)
    bn = nn.BatchNorm3d(c).eval()
    with torch.no_grad():
        bn.running_mean.copy_(mu.float())
        bn.running_var.copy_(var.float())
        bn.weight.copy_(m.weight)
        bn.bias.copy_(m.bias)
    m.eval()
    x = torch.randn(5, c, 2, 4, 4)  # eval takes any batch, no split constraint
    assert torch.allclose(m(x), bn(x), atol=1e-5)
    assert torch.allclose(m.to_batchnorm()(x), bn(x), atol=1e-5)


def test_num_splits_is_mutable_and_keeps_the_aggregate():
    torch.manual_seed(3)
    m = SubBatchNorm3d(4, num_splits=2)
    for _ in range(3):
        m(torch.randn(8, 4, 2, 3, 3) + 2)
    m.aggregate_stats()
    before_mean, before_var = m.running_mean.clone(), m.running_var.clone()
    m.num_splits = 4
    assert m.split_running_mean.shape == (16,)
    assert torch.allclose(m.running_mean, before_mean) and torch.allclose(m.running_var, before_var)
    # The new splits start from the aggregate, so aggregating again changes nothing.
    m.aggregate_stats()
    assert torch.allclose(m.running_var, before_var, atol=1e-6)
    y = m(torch.randn(8, 4, 2, 3, 3))  # batch 8 splits into 4 groups of 2
    assert y.shape == (8, 4, 2, 3, 3)
    assert set_num_splits(m, 1) == 1 and m.num_splits == 1


def test_state_dict_round_trip_with_another_split_count():
    torch.manual_seed(4)
    m = SubBatchNorm3d(3, num_splits=4)
    _randomise_affine(m)
    for _ in range(3):
        m(torch.randn(8, 3, 2, 3, 3))
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = SubBatchNorm3d(3, num_splits=1)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.num_splits == 4
    x = torch.randn(8, 3, 2, 3, 3)
    assert torch.allclose(fresh(x), m(x))
    m.eval(), fresh.eval()
    assert torch.allclose(fresh(x), m(x))


def test_convert_to_sub_bn_preserves_function_and_reports():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4)
    )
    model.train()
    for _ in range(3):
        model(torch.randn(4, 3, 3, 5, 5))
    model.eval()
    x = torch.randn(2, 3, 3, 5, 5)
    ref = model(x)
    done = convert_to_sub_bn(model, num_splits=2)
    assert [r.name for r in done] == ["1", "4"] and done[0].new == "SubBatchNorm3d"
    assert torch.allclose(model(x), ref, atol=1e-6)
    model.train()
    model(torch.randn(4, 3, 3, 5, 5))  # 2 groups of 2
    with pytest.warns(NoEffectWarning):
        convert_to_sub_bn(nn.Linear(2, 2))


def test_sub_bn_gradients_flow():
    m = SubBatchNorm2d(3, num_splits=2)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    (m(x) ** 2).sum().backward()
    assert x.grad is not None and m.weight.grad is not None and torch.isfinite(x.grad).all()
    ref = F.batch_norm(x.detach()[0::2], None, None, training=True)
    assert torch.allclose(
        m(x.detach())[0::2], ref * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1), atol=1e-5
    )


@pytest.mark.parametrize("splits", [1, 2])
def test_precise_bn_is_the_average_over_batches(splits):
    from trainforge_multigrid_video.subbn import precise_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3), nn.ReLU(), nn.BatchNorm3d(3))
    convert_to_sub_bn(model, num_splits=splits)
    model[3] = nn.BatchNorm3d(3, momentum=0.3)  # a plain BN next to the SubBNs
    batches = [torch.randn(4, 2, 2, 3, 3) * (1 + i) + i for i in range(5)]
    model.eval()
    assert precise_bn(model, iter(batches), num_batches=3) == 3
    assert not model.training and model[1].momentum == 0.1 and model[3].momentum == 0.3
    with torch.no_grad():
        feats = [model[0](b) for b in batches[:3]]
    # Per split: the plain mean of the batch means and of the unbiased batch variances;
    # the aggregate then folds the splits (mean of means, var + spread of the means).
    dims = (0, 2, 3, 4)

    def per_split(stat):
        return torch.stack(
            [torch.stack([stat(f[j::splits], dims) for j in range(splits)]) for f in feats]
        ).mean(0)

    means, var = per_split(torch.mean), per_split(torch.var)
    mean = means.mean(0)
    torch.testing.assert_close(model[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        model[1].running_var, var.mean(0) + ((means - mean) ** 2).mean(0), rtol=1e-5, atol=1e-6
    )
    with torch.no_grad():
        h = [model[2](model[1].train()(f)) for f in feats]
    model.eval()
    torch.testing.assert_close(model[3].running_var, torch.stack([x.var(dims) for x in h]).mean(0))
    # (input, label) tuples are accepted, like a DataLoader's batches
    assert precise_bn(model, [(b, 0) for b in batches], num_batches=10) == 5


def test_precise_bn_bad_input():
    from trainforge_multigrid_video.subbn import precise_bn

    model = nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3))
    with pytest.raises(ValueError, match="num_batches"):
        precise_bn(model, [torch.randn(2, 2, 1, 2, 2)], num_batches=0)
    with pytest.raises(ValueError, match="no batch"):
        precise_bn(model, [], num_batches=4)
    with pytest.raises(TypeError, match="model"):
        precise_bn("model", [], num_batches=4)
    with pytest.raises(TypeError, match="batches"):
        precise_bn(model, [["x"]], num_batches=4)
    assert model[1].momentum == 0.1  # restored after the error
    assert precise_bn(nn.Linear(2, 2), [torch.randn(2, 2)], num_batches=1) == 0  # no BN
