"""Inference-time padding of the first factor (``LowRankLinear.inference_pad``): the same
function as the plain two-Linear path, a cache that follows the weight, nothing in the
state dict."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from torch import nn

from trainforge_core.errors import NoEffectWarning
from trainforge_pela import (
    DEFAULT_INFERENCE_PAD,
    LowRankLinear,
    apply_pela,
    compress_linear_layers,
    low_rank_layers,
    set_inference_pad,
)


def _layer(rank: int = 30, pad: int = 4, dtype: torch.dtype = torch.float32) -> LowRankLinear:
    """Rank 30 padded to 32 (2 extra rows, within the rank / 8 rule)."""
    torch.manual_seed(0)
    return LowRankLinear(48, 40, rank, inference_pad=pad).to(dtype).eval()


def _plain(layer: LowRankLinear, x: torch.Tensor) -> torch.Tensor:
    """The two Linears one after the other, written independently of the module."""
    h = x @ layer[0].weight.T
    return h @ layer[1].weight.T + layer[1].bias


def _compressed(vit: nn.Module, inference_pad: int = 2, **kwargs) -> nn.Module:
    """Tiny ViT at ratio 3: ranks qkv 16, proj 10, fc1/fc2 17; pad 2 pads fc1/fc2 to 18."""
    student = copy.deepcopy(vit)
    apply_pela(student, 3.0, inference_pad=inference_pad, **kwargs)
    return student.eval()


def test_pads_only_ranks_off_the_multiple(vit, images):
    student = _compressed(vit)
    layers = low_rank_layers(student)
    with torch.no_grad():
        student(images)
    for name, layer in layers.items():
        if layer.rank % 2:
            assert layer._pad_cache is not None, name
            padded = layer._pad_cache[1]
            assert padded.shape == (layer.rank + 1, layer.in_features)
            torch.testing.assert_close(padded[: layer.rank], layer[0].weight, rtol=0, atol=0)
            assert not padded[layer.rank :].any()
        else:
            assert layer._pad_cache is None, name  # even ranks need no padding


def test_default_pad_16_skips_small_ranks(vit, images):
    assert DEFAULT_INFERENCE_PAD == 16
    student = copy.deepcopy(vit)
    apply_pela(student, 3.0)
    layers = low_rank_layers(student)
    assert {layer.inference_pad for layer in layers.values()} == {16}
    with torch.no_grad():
        student.eval()(images)
    # 17 -> 32 and 10 -> 16 would add more than rank / 8 rows: plain path
    assert all(layer._pad_cache is None for layer in layers.values())
    big = LowRankLinear(3072, 768, 204).eval()  # ViT-B fc2 at ratio 3: 204 -> 208
    with torch.no_grad():
        big(torch.randn(2, 3072))
    assert big._pad_cache[1].shape == (208, 3072)
    for rank, padded in ((307, 320), (409, 416), (130, 144), (70, None), (36, None)):
        layer = LowRankLinear(4, 4, rank).eval()  # narrow layers: only the rule matters
        with torch.no_grad():
            weight = layer._padded_first_weight()
        assert (None if weight is None else weight.shape[0]) == padded, rank


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 48), (2, 5, 48), (48,), (0, 48)])
def test_padded_output_equals_the_plain_path(dtype, shape):
    layer = _layer(dtype=dtype)
    x = torch.randn(*shape, dtype=dtype)
    with torch.no_grad():
        padded = layer(x)
        assert layer._pad_cache is not None
        layer.inference_pad = 1
        unpadded = layer(x)
    assert padded.shape == (*shape[:-1], 40)
    torch.testing.assert_close(padded, unpadded)
    torch.testing.assert_close(padded, _plain(layer, x))


def test_whole_vit_same_logits_in_fp32_fp64_and_bf16_autocast(vit, images):
    padded = _compressed(vit)
    plain = copy.deepcopy(padded)
    assert set_inference_pad(plain, 1) == 16  # 4 blocks x 4 Linears
    with torch.inference_mode():
        torch.testing.assert_close(padded(images), plain(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_p, out_u = padded(images), plain(images)
        assert out_p.dtype == torch.bfloat16
        torch.testing.assert_close(out_p.float(), out_u.float(), rtol=2e-2, atol=2e-2)
    padded.double()
    plain.double()
    with torch.no_grad():
        torch.testing.assert_close(padded(images.double()), plain(images.double()))


def test_bf16_weights():
    layer = _layer(dtype=torch.bfloat16)
    x = torch.randn(9, 48, dtype=torch.bfloat16)
    with torch.no_grad():
        padded = layer(x)
        assert layer._pad_cache[1].dtype == torch.bfloat16
        layer.inference_pad = 1
        unpadded = layer(x)
    torch.testing.assert_close(padded, unpadded, rtol=2e-2, atol=2e-2)


def test_plain_path_in_training_or_with_gradients():
    layer = _layer()
    x = torch.randn(3, 48)
    layer.train()
    with torch.no_grad():
        layer(x)
    assert layer._pad_cache is None  # training mode
    layer.eval()
    out = layer(x)  # gradients flow to the first factor
    assert layer._pad_cache is None
    out.sum().backward()
    assert layer[0].weight.grad is not None
    # a frozen first factor under autograd may use the padded copy; x still gets its gradient
    layer[0].weight.requires_grad_(False)
    xg = x.clone().requires_grad_(True)
    layer(xg).sum().backward()
    assert layer._pad_cache is not None
    expected = torch.ones(3, 40) @ layer[1].weight @ layer[0].weight
    torch.testing.assert_close(xg.grad, expected)


def test_cache_follows_an_optimizer_step():
    layer = _layer()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(6, 48)
    with torch.no_grad():
        before = layer(x)
    layer.train()
    loss = layer(x).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        layer[0].weight.add_(0.1)  # an in-place write under no_grad, still counted
    layer.eval()
    with torch.no_grad():
        after = layer(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _plain(layer, x))


def test_cache_follows_in_place_writes_without_a_mode_switch():
    layer = _layer()
    x = torch.randn(6, 48)
    with torch.no_grad():
        layer(x)
        key = layer._pad_cache[0]
        layer[0].weight.mul_(2.0)  # bumps the version counter
        out = layer(x)
    assert layer._pad_cache[0] != key
    torch.testing.assert_close(out, _plain(layer, x))


def test_cache_dropped_by_load_state_dict_to_and_mode_switches():
    layer = _layer()
    other = _layer()
    with torch.no_grad():
        other[0].weight.normal_()
    x = torch.randn(4, 48)
    with torch.no_grad():
        layer(x)
        assert layer._pad_cache is not None
        layer.load_state_dict(other.state_dict())
        assert layer._pad_cache is None
        torch.testing.assert_close(layer(x), _plain(other, x))
        layer.double()
        assert layer._pad_cache is None
        out = layer(x.double())
        assert layer._pad_cache[1].dtype == torch.float64
        torch.testing.assert_close(out, _plain(layer, x.double()))
        layer.train()
        assert layer._pad_cache is None
        layer.eval()
        layer(x.double())
        layer.clear_inference_cache()
        assert layer._pad_cache is None


def test_state_dict_unchanged_and_no_padded_copy_saved(vit, images, tmp_path):
    from safetensors.torch import load_file, save_file

    padded = _compressed(vit)
    plain = _compressed(vit, inference_pad=1)
    with torch.no_grad():
        expected = padded(images)  # fills the caches
    state = padded.state_dict()
    assert {k: v.shape for k, v in state.items()} == {
        k: v.shape for k, v in plain.state_dict().items()
    }
    for layer in low_rank_layers(padded).values():
        assert {n for n, _ in layer.named_parameters()} == {"0.weight", "1.weight", "1.bias"}
        assert not list(layer.buffers())
    # torch.save of the state dict and of the whole module, and safetensors
    buf = io.BytesIO()
    torch.save(state, buf)
    size_state = buf.tell()
    buf_plain = io.BytesIO()
    torch.save(plain.state_dict(), buf_plain)
    assert size_state == buf_plain.tell()
    whole = pickle.dumps(padded)
    assert len(whole) < len(pickle.dumps(plain)) + 4096  # no cache tensors pickled
    assert all(m._pad_cache is None for m in low_rank_layers(pickle.loads(whole)).values())
    save_file(state, tmp_path / "s.safetensors")
    fresh = copy.deepcopy(vit)
    apply_pela(fresh, 3.0, init="none")
    fresh.load_state_dict(load_file(tmp_path / "s.safetensors"))
    buf.seek(0)
    fresh2 = copy.deepcopy(vit)
    apply_pela(fresh2, 3.0, init="none")
    fresh2.load_state_dict(torch.load(buf, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(images), expected)
        torch.testing.assert_close(fresh2.eval()(images), expected)
    clone = copy.deepcopy(padded)
    assert all(m._pad_cache is None for m in low_rank_layers(clone).values())


def test_hooks_on_a_factor_still_fire():
    layer = _layer()
    seen = []
    handle = layer[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        layer(torch.randn(3, 48))
    assert seen == [torch.Size([3, 30])]  # the plain path ran: rank-wide intermediate
    assert layer._pad_cache is None
    handle.remove()


def test_fx_trace_keeps_the_plain_graph():
    layer = _layer()
    with torch.no_grad():
        layer(torch.randn(2, 48))
    gm = torch.fx.symbolic_trace(layer)
    x = torch.randn(5, 48)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), _plain(layer, x))


def test_set_inference_pad_and_repr(vit):
    student = _compressed(vit)
    assert set_inference_pad(student, 8) == 16
    assert {m.inference_pad for m in low_rank_layers(student).values()} == {8}
    assert "inference_pad=8" in repr(low_rank_layers(student)["blocks.0.mlp.fc1"])
    assert "inference_pad" not in repr(LowRankLinear(4, 4, 2, inference_pad=1))
    model = compress_linear_layers(copy.deepcopy(vit), 2.0, inference_pad=32)
    assert {m.inference_pad for m in low_rank_layers(model).values()} == {32}


@pytest.mark.parametrize("bad", [0, -16])
def test_inference_pad_below_one_is_refused(bad, vit):
    with pytest.raises(ValueError, match="inference_pad must be >= 1"):
        LowRankLinear(8, 8, 2, inference_pad=bad)
    with pytest.raises(ValueError, match="inference_pad must be >= 1"):
        apply_pela(copy.deepcopy(vit), 2.0, inference_pad=bad)
    student = _compressed(vit)
    with pytest.raises(ValueError, match="inference_pad must be >= 1"):
        set_inference_pad(student, bad)


@pytest.mark.parametrize("bad", [True, 16.0, "16", None])
def test_inference_pad_type(bad, vit):
    with pytest.raises(TypeError, match="inference_pad must be an int"):
        LowRankLinear(8, 8, 2, inference_pad=bad)
    with pytest.raises(TypeError, match="inference_pad must be an int"):
        compress_linear_layers(copy.deepcopy(vit), 2.0, inference_pad=bad)
    with pytest.raises(TypeError, match="inference_pad must be an int"):
        set_inference_pad(_compressed(vit), bad)


def test_set_inference_pad_bad_model():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        set_inference_pad("not a model", 16)  # type: ignore[arg-type]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert set_inference_pad(nn.Sequential(nn.Linear(4, 4)), 16) == 0
    assert any(issubclass(w.category, NoEffectWarning) for w in caught)


def test_global_forward_hooks_still_fire():
    layer = _layer()
    seen = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(type(m).__name__)
    )
    try:
        with torch.no_grad():
            layer(torch.randn(3, 48))
    finally:
        handle.remove()
    assert seen == ["Linear", "Linear", "LowRankLinear"]
    assert layer._pad_cache is None


def test_module_pickled_before_0_3_still_runs():
    layer = _layer()
    state = layer.__getstate__()
    del state["inference_pad"], state["_pad_cache"]  # what a 0.2.0 pickle holds
    old = LowRankLinear.__new__(LowRankLinear)
    old.__setstate__(state)
    assert old.inference_pad == DEFAULT_INFERENCE_PAD
    x = torch.randn(3, 48)
    with torch.no_grad():
        torch.testing.assert_close(old.eval()(x), _plain(layer, x))


def test_changing_the_pad_rebuilds_the_cache():
    layer = _layer(rank=90, pad=4)  # 90 -> 92
    x = torch.randn(3, 48)
    with torch.no_grad():
        first = layer(x)
        assert layer._pad_cache[1].shape[0] == 92
        layer.inference_pad = 16  # set directly, without set_inference_pad: 90 -> 96
        second = layer(x)
    assert layer._pad_cache[1].shape[0] == 96
    torch.testing.assert_close(first, _plain(layer, x))
    torch.testing.assert_close(second, _plain(layer, x))
