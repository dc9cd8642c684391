"""SLTrainLinear: forward and gradients against a plain autograd graph, support, init."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_sltrain import (
    SLTrainLinear,
    algorithm_costs,
    choose_algorithm,
    sltrain_linear_function,
    sltrain_linear_params,
    sparse_mac_cost,
)
from trainforge_sltrain import linear as linear_mod


def _layer(in_f=24, out_f=16, rank=4, sparsity=0.1, alpha=8.0, bias=True, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return SLTrainLinear(in_f, out_f, rank, sparsity, alpha, bias, generator=g, **kw)


def _reference(layer: SLTrainLinear, x: torch.Tensor, B, A, values, bias):
    """W = s*B@A + S written as an ordinary autograd graph (dense scatter, no custom op)."""
    S = torch.zeros(layer.out_features * layer.in_features, dtype=values.dtype)
    S = S.scatter_add(0, layer.sparse_index.long(), values).view(layer.out_features, -1)
    W = (layer.alpha / layer.rank) * B @ A + S
    out = x @ W.t()
    return out + bias if bias is not None else out


@pytest.mark.parametrize("algorithm", ["materialize", "factored"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_all_gradients_match_plain_autograd(bias, algorithm):
    layer = _layer(bias=bias, algorithm=algorithm)
    with torch.no_grad():  # B = 0 at init would make grad_A vanish; give it a value
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = layer(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, [x, *layer.parameters()], g)

    leaves = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    named = dict(zip([n for n, _ in layer.named_parameters()], leaves, strict=True))
    x_ref = x.detach().clone().requires_grad_(True)
    ref = _reference(
        layer, x_ref, named["lora_B"], named["lora_A"], named["sparse_value"], named.get("bias")
    )
    ref_grads = torch.autograd.grad(ref, [x_ref, *leaves], g)

    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("algorithm", ["materialize", "factored"])
def test_gradcheck_float64(algorithm):
    layer = _layer(in_f=5, out_f=6, rank=2, sparsity=0.3, dtype=torch.float64)
    B = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    A = layer.lora_A.detach().clone().requires_grad_(True)
    v = layer.sparse_value.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    idx = layer.sparse_index
    assert torch.autograd.gradcheck(
        lambda x, B, A, v, b: sltrain_linear_function(
            x, B, A, v, idx, b, layer.scaling, algorithm=algorithm
        ),
        (x, B, A, v, b),
    )


@pytest.mark.parametrize("algorithm", ["materialize", "factored"])
def test_no_saved_tensor_has_the_dense_weight_shape(algorithm):
    layer = _layer(in_f=40, out_f=32, rank=4, algorithm=algorithm)
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    x = torch.randn(7, 40, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x).sum().backward()
    assert shapes, "the hook saw no saved tensor: the test would pass vacuously"
    assert (32, 40) not in shapes and (40, 32) not in shapes
    # A dense nn.Linear, by contrast, does save its weight (the hook works).
    dense_shapes = []
    lin = torch.nn.Linear(40, 32)
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: dense_shapes.append(tuple(t.shape)) or t, lambda t: t
    ):
        lin(x).sum().backward()
    assert (32, 40) in dense_shapes or (40, 32) in dense_shapes


def test_support_size_unique_sorted_and_seeded():
    layer = _layer(in_f=30, out_f=20, sparsity=0.07)
    idx = layer.sparse_index
    assert idx.numel() == int(0.07 * 600) == layer.nnz
    assert idx.dtype == torch.int32
    assert torch.unique(idx).numel() == idx.numel()
    assert bool((idx[1:] > idx[:-1]).all()) and int(idx.min()) >= 0 and int(idx.max()) < 600
    again = _layer(in_f=30, out_f=20, sparsity=0.07)
    other = _layer(in_f=30, out_f=20, sparsity=0.07, seed=1)
    assert torch.equal(idx, again.sparse_index)
    assert not torch.equal(idx, other.sparse_index)
    for (n, p), q in zip(layer.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_support_survives_state_dict_round_trip():
    src = _layer(seed=3)
    dst = _layer(seed=4)
    assert not torch.equal(src.sparse_index, dst.sparse_index)
    dst.load_state_dict(src.state_dict())
    assert torch.equal(src.sparse_index, dst.sparse_index)
    x = torch.randn(2, 24)
    torch.testing.assert_close(src(x), dst(x), atol=0, rtol=0)


def test_reference_state_dict_with_int64_index_loads():
    src = _layer(index_dtype=torch.int64)
    dst = _layer(seed=9)
    dst.load_state_dict(src.state_dict())  # reference checkpoints store int64 indices
    assert dst.sparse_index.dtype == torch.int32
    assert torch.equal(dst.sparse_index.long(), src.sparse_index)


def test_init_is_the_sparse_part_alone():
    layer = _layer(in_f=400, out_f=300, rank=8, sparsity=0.05)
    assert torch.count_nonzero(layer.lora_B) == 0
    x = torch.randn(6, 400)
    S = torch.zeros(300 * 400).index_add_(0, layer.sparse_index, layer.sparse_value.detach())
    want = x @ S.view(300, 400).t() + layer.bias.detach()
    torch.testing.assert_close(layer(x).detach(), want, atol=1e-5, rtol=1e-5)
    # U(-1/sqrt(in), 1/sqrt(in)) has std 1/sqrt(3 in)
    std = float(layer.sparse_value.detach().std())
    assert abs(std - 1 / math.sqrt(3 * 400)) < 0.03 / math.sqrt(3 * 400) * 3
    assert float(layer.bias.abs().max()) <= 1 / math.sqrt(300)
    bound_a = 1 / math.sqrt(400)  # kaiming_uniform(a=sqrt(5)) on [r, in]: U(-1/sqrt(in), ..)
    assert float(layer.lora_A.abs().max()) <= bound_a


def test_zero_sparsity_is_pure_low_rank():
    layer = _layer(sparsity=0.0)
    assert layer.nnz == 0
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 24)
    want = x @ (layer.scaling * layer.lora_B @ layer.lora_A).t() + layer.bias
    torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)


def test_to_linear_computes_the_same_function():
    layer = _layer()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 24)
    lin = layer.to_linear()
    assert type(lin) is torch.nn.Linear
    torch.testing.assert_close(lin(x), layer(x), atol=1e-5, rtol=1e-5)


def test_parameter_count_closed_form():
    layer = _layer(in_f=50, out_f=30, rank=5, sparsity=0.03)
    count = sum(p.numel() for p in layer.parameters())
    assert count == 5 * 80 + int(0.03 * 1500) + 30 == sltrain_linear_params(50, 30, 5, 0.03)
    assert sltrain_linear_params(50, 30, 5, 0.03, bias=False) == count - 30


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(rank=0), ValueError),
        (dict(rank=-2), ValueError),
        (dict(rank=17), ValueError),  # above min(in=24, out=16)
        (dict(rank=2.5), ValueError),
        (dict(sparsity=1.0), ValueError),
        (dict(sparsity=-0.1), ValueError),
        (dict(sparsity=1.5), ValueError),
        (dict(sparsity="0.1"), TypeError),
        (dict(sparsity=1e-5), ValueError),  # no entries at all
        (dict(alpha=0.0), ValueError),
        (dict(alpha=float("nan")), ValueError),
        (dict(index_dtype=torch.int16), TypeError),
        (dict(in_f=0), ValueError),
    ],
)
def test_bad_layer_arguments(kwargs, error):
    with pytest.raises(error):
        _layer(**kwargs)


def test_int32_support_too_large_is_refused_before_allocating():
    with pytest.raises(ValueError, match="int32"):
        SLTrainLinear(65536, 65536, rank=1, sparsity=1e-9, index_dtype=torch.int32)


def test_bad_forward_inputs():
    layer = _layer()
    with pytest.raises(ValueError, match="last dimension 24"):
        layer(torch.randn(3, 23))
    with pytest.raises(TypeError):
        layer([1.0] * 24)
    idx = layer.sparse_index
    with pytest.raises(ValueError):
        sltrain_linear_function(
            torch.randn(2, 7), layer.lora_B, layer.lora_A, layer.sparse_value, idx
        )
    with pytest.raises(ValueError):
        sltrain_linear_function(
            torch.randn(2, 24), layer.lora_B, layer.lora_A, layer.sparse_value, idx, torch.zeros(3)
        )
    with pytest.raises(TypeError):
        sltrain_linear_function(torch.randn(2, 24), None, layer.lora_A, layer.sparse_value, idx)
    with pytest.raises(ValueError):
        sltrain_linear_params(10, 10, 0, 0.1)


def _grads(fn, x, B, A, v, b):
    leaves = [t.detach().clone().requires_grad_(True) for t in (x, B, A, v, b)]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(9), dtype=out.dtype)
    return [out, *torch.autograd.grad(out, leaves, g)]


@pytest.mark.parametrize("chunk", [2048, 3])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shuffled", [False, True])
def test_factored_equals_materialize(index_dtype, shuffled, chunk, monkeypatch):
    monkeypatch.setattr(linear_mod, "TOKEN_CHUNK", chunk)  # 3: 14 tokens in ragged chunks
    # The factored path never forms W; it must agree with the materialising one, also for an
    # unsorted support (CSR order differs from the support order) and 3-D inputs.
    gen = torch.Generator().manual_seed(0)
    m, n, r, nnz = 48, 40, 6, 300
    index = torch.randperm(m * n, generator=gen)[:nnz]
    if not shuffled:
        index = index.sort().values
    index = index.to(index_dtype)
    f64 = {"dtype": torch.float64}
    B, A = torch.randn(m, r, generator=gen, **f64), torch.randn(r, n, generator=gen, **f64)
    v, b = torch.randn(nnz, generator=gen, **f64), torch.randn(m, generator=gen, **f64)
    x = torch.randn(2, 7, n, generator=gen, **f64)

    def run(alg):
        return _grads(
            lambda *t: sltrain_linear_function(*t[:4], index, t[4], 0.75, algorithm=alg),
            x, B, A, v, b,
        )  # fmt: skip

    for got, want in zip(run("factored"), run("materialize"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_auto_rule_and_dispatch():
    # Issue shapes (r = 128, delta = 0.03): the sparse multiply-add's cost falls with the
    # layer's size (measured idle on one thread 37.2 / 37.4 / 30.3 dense ones at d = 1024 /
    # 2048 / 4096), so the rule materialises at d <= 2048 and picks the factored path at
    # d = 4096, as measured (factored 0.970x / 0.922x dense against materialise 1.211x /
    # 1.041x at 2,048 / 8,192 tokens). With the old fixed weight (35) d = 4096 materialised.
    nnz = {d: int(0.03 * d * d) for d in (1024, 2048, 4096)}
    expect = {
        (1024, 2048): "materialize",
        (1024, 8192): "materialize",
        (2048, 2048): "materialize",
        (2048, 8192): "materialize",
        (4096, 2048): "factored",
        (4096, 8192): "factored",
    }
    for (d, tokens), want in expect.items():
        assert choose_algorithm(tokens, d, d, 128, nnz[d]) == want, (d, tokens)
    mat, fac = algorithm_costs(2048, 1024, 1024, 128, nnz[1024])
    assert mat == 3 * 2048 * 1024 * 1024 + linear_mod.MATERIALIZE_BUILD_COST * 4 * 1024**2 * 128
    assert fac == pytest.approx(3 * 2048 * 128 * 2048 + 38.45 * 3 * 2048 * nnz[1024], rel=1e-4)
    assert choose_algorithm(2048, 1024, 1024, 128, nnz[1024] // 10) == "factored"
    assert choose_algorithm(512, 64, 64, 4, 409) == "materialize"  # the quick demo's SLTrain
    assert choose_algorithm(512, 64, 64, 8, 0) == "factored"  # ... and its low-rank baseline
    assert choose_algorithm(1, 64, 64, 4, 409) == "factored"
    assert choose_algorithm(1, 64, 64, 4, 409, device_type="cuda") == "materialize"
    assert choose_algorithm(0, 64, 64, 4, 409) == "materialize"


def test_sparse_mac_cost_is_the_documented_fit():
    # The fitted points (README "Benchmark"), falling with nnz, held constant outside the
    # measured range (no extrapolation), deterministic.
    assert sparse_mac_cost(31457) == pytest.approx(38.45, abs=0.01)
    assert sparse_mac_cost(125829) == pytest.approx(34.96, abs=0.01)
    assert sparse_mac_cost(503316) == pytest.approx(31.47, abs=0.01)
    assert abs(linear_mod.MATERIALIZE_BUILD_COST - 1.848) < 1e-9
    assert sparse_mac_cost(0) == sparse_mac_cost(409) == sparse_mac_cost(31457)
    assert sparse_mac_cost(10**9) == sparse_mac_cost(503316)
    costs = [sparse_mac_cost(n) for n in (31457, 60000, 125829, 250000, 503316)]
    assert costs == sorted(costs, reverse=True)


@pytest.mark.parametrize(
    "args",
    [
        (-1, 4, 4, 2, 3),
        (4, 4, 4, 2, 1.5),
        (4, True, 4, 2, 3),
        (4, 4, "4", 2, 3),
        (4, 4, 4, None, 3),
        (4, 4, 4, 2, 17),  # more entries than the 4 x 4 weight has
    ],
)
def test_rule_functions_bad_input(args):
    with pytest.raises(ValueError, match="tokens|out_features|in_features|rank|nnz"):
        algorithm_costs(*args)
    with pytest.raises(ValueError, match="tokens|out_features|in_features|rank|nnz"):
        choose_algorithm(*args)


def test_sparse_mac_cost_and_device_type_bad_input():
    for bad in (-1, 2.5, True, None, "8"):
        with pytest.raises(ValueError, match="nnz"):
            sparse_mac_cost(bad)
    with pytest.raises(TypeError, match="device_type"):
        choose_algorithm(4, 4, 4, 2, 3, device_type=torch.device("cpu"))


def test_auto_dispatches_per_call():
    layer = _layer(in_f=64, out_f=64, rank=4, sparsity=0.1)
    assert layer.algorithm == "auto"
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.shape) or t, id):
        layer(torch.randn(1, 64, requires_grad=True))
    assert (1, 4) in shapes  # x A^T, saved only by the factored path
    shapes.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.shape) or t, id):
        layer(torch.randn(512, 64, requires_grad=True))
    assert (512, 4) not in shapes


def test_factored_follows_a_new_support():
    # The CSR structure is cached per support tensor: loading another support must not reuse it.
    layer = _layer(algorithm="factored")
    x = torch.randn(5, 24)
    layer(x)
    other = _layer(seed=3)
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(x), other(x), rtol=1e-6, atol=1e-6)


def test_algorithm_bad_input():
    with pytest.raises(ValueError, match="algorithm"):
        _layer(algorithm="fast")
    layer = _layer()
    with pytest.raises(ValueError, match="algorithm"):
        sltrain_linear_function(
            torch.randn(2, 24), layer.lora_B, layer.lora_A, layer.sparse_value,
            layer.sparse_index, algorithm="sparse",
        )  # fmt: skip
    forced = _layer(algorithm="factored")
    with (
        pytest.raises(ValueError, match="one dtype and no autocast"),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        forced(torch.randn(2, 24))
    with pytest.raises(ValueError, match="init_b"):
        _layer(init_b="normal")


def test_kaiming_b_starts_a_nonzero_low_rank_product():
    layer = _layer(sparsity=0.0, init_b="kaiming")
    bound = 1 / math.sqrt(layer.rank)  # kaiming_uniform(a=sqrt 5): 1/sqrt(fan_in)
    assert 0 < layer.lora_B.abs().max() <= bound
    assert layer.to_dense().abs().max() > 0
    assert _layer(sparsity=0.0).to_dense().abs().max() == 0  # the reference's B = 0
