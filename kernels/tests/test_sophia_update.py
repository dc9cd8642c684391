"""trainforge::sophia_update: Triton kernel vs torch reference vs sophia.py's update."""

from __future__ import annotations

import math

import pytest
import torch

from trainforge_kernels import kernels
from trainforge_kernels import sophia_update as sophia_update_module
from trainforge_kernels.sophia_update import (
    sophia_update,
    sophia_update_compiled,
    sophia_update_reference,
)
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like
from trainforge_kernels.testing import test_device as _device

SHAPES = [(1,), (7,), (1000,), (1025,), (3, 333), (2, 5, 129)]


def _inputs(shape, seed, device="cpu", dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(shape, generator=gen)
    g = torch.randn(shape, generator=gen) * 1e-2
    m = torch.randn(shape, generator=gen) * 1e-2
    h = torch.rand(shape, generator=gen) * 1e-4
    h.view(-1)[::5] = 0.0  # h = 0 coordinates saturate to sign(m)
    h.view(-1)[1::7] *= -1.0  # negative Hutchinson estimates (for clamp_hessian)
    return [t.to(device=device, dtype=dtype) for t in (p, g, m, h)]


def _sophia_py(p, g, m, h, lr, beta1, rho, bs, wd, maximize=False):
    """Liuhong99/Sophia:sophia.py `_single_tensor_sophiag`, re-stated (non-capturable)."""
    grad = -g if maximize else g
    p.mul_(1 - lr * wd)
    m.mul_(beta1).add_(grad, alpha=1 - beta1)
    ratio = (m.abs() / (rho * bs * h + 1e-15)).clamp(None, 1)
    p.addcmul_(m.sign(), ratio, value=-lr)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_reference_is_sophia_py_bit_for_bit(shape, maximize):
    p, g, m, h = _inputs(shape, seed=1)
    h = h.abs()  # SophiaG's Hessian EMA is never negative
    p1, m1, p2, m2 = p.clone(), m.clone(), p.clone(), m.clone()
    _sophia_py(p1, g, m1, h, 3e-4, 0.965, 0.05, 5120, 0.2, maximize)
    sophia_update(p2, g, m2, h, 3e-4, 0.965, 0.05 * 5120, 0.2, 1e-15, maximize)
    assert torch.equal(m1, m2)
    assert torch.equal(p1, p2)


def test_h_zero_gives_sign_step_after_decay():
    p, g, m, _ = _inputs((257,), seed=2)
    h = torch.zeros_like(p)
    p0 = p.clone()
    m_new = 0.9 * m + 0.1 * g
    sophia_update(p, g, m, h, 1e-3, 0.9, 100.0, 0.1, 1e-15)
    expected = p0 * (1 - 1e-3 * 0.1) - 1e-3 * torch.sign(m_new)
    torch.testing.assert_close(p, expected, rtol=0, atol=1e-7)


def test_clamp_hessian_saturates_negative_coordinates():
    p, g, m, h = _inputs((500,), seed=3)
    neg = h < 0
    assert neg.any()
    p0 = p.clone()
    sophia_update(p, g, m, h, 1e-2, 0.9, 1.0, 0.0, 1e-12, clamp_hessian=True)
    step = p - p0
    torch.testing.assert_close(step[neg], -1e-2 * torch.sign(m[neg]), rtol=0, atol=1e-8)


@pytest.mark.parametrize("clamp_hessian", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape", [*SHAPES, (4099, 3)])
def test_triton_matches_reference(shape, maximize, clamp_hessian, monkeypatch):
    reason = needs_interpreter_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("TRAINFORGE_KERNELS", "triton")
    device = _device()
    from trainforge_kernels.sophia_update import _sophia_update_triton

    p, g, m, h = _inputs(shape, seed=hash(shape) % 1000, device=device)
    if not clamp_hessian:
        h = h.abs()
    p_ref, m_ref = p.clone(), m.clone()
    sophia_update_reference(p_ref, g, m_ref, h, lr=3e-4, beta1=0.965, rho_bs=256.0,
                            weight_decay=0.2, eps=1e-15, maximize=maximize,
                            clamp_hessian=clamp_hessian)  # fmt: skip
    # poisoned state would survive in any element the kernel skipped
    p_tri, m_tri = poisoned_like(p), poisoned_like(m)
    p_tri.copy_(p)
    m_tri.copy_(m)
    _sophia_update_triton(p_tri, g, m_tri, h, 3e-4, 0.965, 256.0, 0.2, 1e-15, maximize,
                          clamp_hessian)  # fmt: skip
    torch.testing.assert_close(m_tri, m_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(p_tri, p_ref, rtol=1e-6, atol=1e-7)


def test_triton_bf16_state(monkeypatch):
    reason = needs_interpreter_reason()
    if reason:
        pytest.skip(reason)
    from trainforge_kernels.sophia_update import _sophia_update_triton

    p, g, m, h = _inputs((1030,), seed=5, device=_device(), dtype=torch.bfloat16)
    h = h.abs()
    p32, m32 = p.float(), m.float()
    sophia_update_reference(p32, g.float(), m32, h.float(), lr=1e-2, beta1=0.9, rho_bs=256.0,
                            weight_decay=0.1, eps=1e-15)  # fmt: skip
    _sophia_update_triton(p, g, m, h, 1e-2, 0.9, 256.0, 0.1, 1e-15, False, False)
    torch.testing.assert_close(p.float(), p32, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(m.float(), m32, rtol=1e-2, atol=1e-3)


def _compiled_and_reference(shapes, seed, **flags):
    kw = dict(lr=3e-4, beta1=0.965, rho_bs=256.0, weight_decay=0.2, eps=1e-15, **flags)
    ours, ref = [], []
    for i, shape in enumerate(shapes):
        p, g, m, h = _inputs(shape, seed=seed + i)
        if not flags.get("clamp_hessian"):
            h = h.abs()
        ours.append((p.clone(), g, m.clone(), h))
        ref.append((p, g, m, h))
    sophia_update_compiled(*(list(col) for col in zip(*ours, strict=True)), **kw)
    for p, g, m, h in ref:
        sophia_update_reference(p, g, m, h, **kw)
    return ours, ref


@pytest.fixture(params=["native", "inductor"])
def cpu_loop(request, monkeypatch):
    """Each CPU path of sophia_update_compiled: the C loop (float32/float64) and the
    torch.compile'd loop (every dtype; forced here with TRAINFORGE_SOPHIA_NATIVE=0)."""
    if request.param == "inductor":
        monkeypatch.setenv("TRAINFORGE_SOPHIA_NATIVE", "0")
    elif sophia_update_module.native_cpu_loop() is None:
        pytest.skip("no C compiler builds the C loop here")
    return request.param


@pytest.mark.parametrize(("maximize", "clamp_hessian"), [(False, False), (True, True)])
def test_compiled_matches_reference(maximize, clamp_hessian, cpu_loop):
    shapes = [*SHAPES, (0,), (4099, 3)]
    ours, ref = _compiled_and_reference(shapes, 11, maximize=maximize,
                                        clamp_hessian=clamp_hessian)  # fmt: skip
    for (p, _, m, _), (p_ref, _, m_ref, _) in zip(ours, ref, strict=True):
        # the loops round each product where the reference fuses: equal up to rounding
        torch.testing.assert_close(m, m_ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(p, p_ref, rtol=1e-6, atol=1e-7)


def _state(shapes, seed, dtype):
    out = []
    for i, shape in enumerate(shapes):
        p, g, m, h = _inputs(shape, seed=seed + i, dtype=dtype)
        out.append([p, g, m, h])
    flat = [t.view(-1) for t in out[0]]
    if flat[0].numel() >= 8:  # non-finite gradients and Hessians propagate as in torch
        flat[1][0], flat[1][1], flat[3][2], flat[3][3] = math.nan, math.inf, math.nan, -math.inf
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("maximize", "clamp_hessian"), [(False, False), (True, True)])
def test_native_loop_equals_compiled_loop_bit_for_bit(dtype, maximize, clamp_hessian,
                                                     monkeypatch):  # fmt: skip
    """The C loop (issue #14.7: one call for all tensors, on all threads) computes what
    the torch.compile'd loop computes, bit for bit, NaN and inf included, on one thread and
    on two (the split falls inside tensors), for sizes 0 and 1 too."""
    if sophia_update_module.native_cpu_loop() is None:
        pytest.skip("no C compiler builds the C loop here")
    shapes = [(70_001,), (1,), (0,), (3, 333), (40_000,), (7,), (2, 5, 129)]
    kw = dict(lr=3e-4, beta1=0.965, rho_bs=256.0, weight_decay=0.2, eps=1e-15,
              maximize=maximize, clamp_hessian=clamp_hessian)  # fmt: skip
    results = {}
    threads = torch.get_num_threads()
    try:
        for name, n_threads, native in (("one", 1, "1"), ("two", 2, "1"), ("inductor", 1, "0")):
            monkeypatch.setenv("TRAINFORGE_SOPHIA_NATIVE", native)
            torch.set_num_threads(n_threads)
            state = _state(shapes, 30, dtype)
            sophia_update_compiled(*(list(col) for col in zip(*state, strict=True)), **kw)
            results[name] = state
    finally:
        torch.set_num_threads(threads)
    for name in ("two", "inductor"):
        for (p, _, m, _), (p1, _, m1, _) in zip(results[name], results["one"], strict=True):
            torch.testing.assert_close(p, p1, rtol=0, atol=0, equal_nan=True)
            torch.testing.assert_close(m, m1, rtol=0, atol=0, equal_nan=True)
    p, _, m, _ = results["one"][0]
    assert p.view(-1)[0].isnan() and m.view(-1)[0].isnan() and m.view(-1)[1].isinf()


def test_native_loop_falls_back_without_a_compiler(monkeypatch, tmp_path):
    """No C compiler: the C loop is not built and the compiled loop runs every tensor."""
    monkeypatch.setattr(sophia_update_module, "_native_lib", None)
    monkeypatch.setenv("TRAINFORGE_KERNELS_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="TRAINFORGE_SOPHIA_NATIVE=0"):
        assert sophia_update_module.native_cpu_loop() is None
    ours, ref = _compiled_and_reference([(50,), (5, 10)], 17)
    for (p, _, m, _), (p_ref, _, m_ref, _) in zip(ours, ref, strict=True):
        torch.testing.assert_close(m, m_ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(p, p_ref, rtol=1e-6, atol=1e-7)
    monkeypatch.setattr(sophia_update_module, "_native_lib", None)  # rebuilt when needed


def test_native_loop_warns_when_its_cache_is_not_writable(monkeypatch, tmp_path):
    """A cache folder that cannot be created is named in the warning, not passed over."""
    if sophia_update_module.native_cpu_loop() is None:
        pytest.skip("no C compiler builds the C loop here")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(sophia_update_module, "_native_lib", None)
    monkeypatch.setenv("TRAINFORGE_KERNELS_CACHE", str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="a-file"):
        assert sophia_update_module.native_cpu_loop() is None
    monkeypatch.setattr(sophia_update_module, "_native_lib", None)  # rebuilt when needed


def test_compiled_handles_parameters_and_non_contiguous_tensors(cpu_loop):
    p, g, m, h = _inputs((6, 40), seed=12)
    h = h.abs()
    param = torch.nn.Parameter(p.clone())
    p_t, g_t, m_t, h_t = (t.t() for t in (p.clone(), g, m.clone(), h))  # non-contiguous
    kw = dict(lr=1e-2, beta1=0.9, rho_bs=64.0, weight_decay=0.1, eps=1e-15)
    sophia_update_compiled([param, p_t], [g, g_t], [m.clone(), m_t], [h, h_t], **kw)
    sophia_update_reference(p, g, m, h, **kw)
    torch.testing.assert_close(param.detach(), p, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p_t.t(), p, rtol=1e-6, atol=1e-7)


def test_compiled_bumps_version_counters_like_an_inplace_op(cpu_loop):
    """p and m are written in place: autograd must see it (a tensor saved for backward
    and then stepped raises, as after any in-place op); g and h are only read."""
    p, g, m, h = _inputs((300,), seed=18)
    w = p.clone().requires_grad_()
    kw = dict(lr=1e-2, beta1=0.9, rho_bs=64.0, weight_decay=0.1, eps=1e-15)
    before = [t._version for t in (p, g, m, h)]
    loss = w.mul(p).sum()  # saves p for backward
    sophia_update_compiled([p], [g], [m], [h], **kw)
    after = [t._version for t in (p, g, m, h)]
    assert after[0] > before[0] and after[2] > before[2]
    assert after[1] == before[1] and after[3] == before[3]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_compiled_new_lr_is_data_not_a_recompile(monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TRAINFORGE_SOPHIA_NATIVE", "0")  # the torch.compile'd loop
    _compiled_and_reference([(50,), (5, 10)], 13)  # compiled (float32)
    graphs = counters["stats"]["unique_graphs"]
    for lr in (1e-3, 2e-3, 5e-4):
        p, g, m, h = _inputs((77,), seed=14)
        sophia_update_compiled([p], [g], [m], [h.abs()], lr=lr, beta1=0.9, rho_bs=8.0,
                               weight_decay=0.1, eps=1e-15)  # fmt: skip
        p2, g2, m2, h2 = _inputs((3, 9), seed=15)
        sophia_update_compiled([p2], [g2], [m2], [h2.abs()], lr=lr, beta1=0.8, rho_bs=4.0,
                               weight_decay=0.0, eps=1e-12)  # fmt: skip
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_one_graph_for_any_list_of_sizes(monkeypatch):
    """The torch.compile'd loop: tensors of any size (8, the size of its numbers, too)
    share one graph per dtype; the results stay exact."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TRAINFORGE_SOPHIA_NATIVE", "0")
    _compiled_and_reference([(50,), (5, 10)], 20)  # the float32 graph exists
    graphs = counters["stats"]["unique_graphs"]
    for seed, shapes in enumerate([[(3, 7)] * 17, [(64,), (2, 2), (8,), (9, 3, 2)],
                                   [(1000,), (11,)] * 5]):  # fmt: skip
        ours, ref = _compiled_and_reference(shapes, 21 + seed)
        for (p, _, m, _), (p_ref, _, m_ref, _) in zip(ours, ref, strict=True):
            torch.testing.assert_close(m, m_ref, rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(p, p_ref, rtol=1e-6, atol=1e-7)
    assert counters["stats"]["unique_graphs"] == graphs


def test_compiled_bad_input_and_compile_failure(monkeypatch):
    p, g, m, h = _inputs((8,), seed=16)
    kw = dict(lr=1e-3, beta1=0.9, rho_bs=1.0, weight_decay=0.0, eps=1e-15)
    with pytest.raises(ValueError, match="same length"):
        sophia_update_compiled([p], [g, g], [m], [h], **kw)
    with pytest.raises(ValueError, match="lr"):
        sophia_update_compiled([p], [g], [m], [h], **{**kw, "lr": -1.0})
    with pytest.raises(ValueError, match="shape"):
        sophia_update_compiled([p], [g[:4]], [m], [h], **kw)
    with pytest.raises(TypeError, match="floating"):
        sophia_update_compiled([p], [g.long()], [m], [h], **kw)

    def no_compiler(*args):
        raise OSError("no C++ compiler")

    monkeypatch.setenv("TRAINFORGE_SOPHIA_NATIVE", "0")
    monkeypatch.setattr(sophia_update_module, "_get_compiled_one_pass", lambda: no_compiler)
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        sophia_update_compiled([p], [g], [m], [h], **kw)


def test_custom_op_is_registered_with_fake():
    assert "sophia_update" in kernels()
    p, g, m, h = _inputs((4, 8), seed=6)
    torch.library.opcheck(
        torch.ops.trainforge.sophia_update.default,
        (p, g, m, h.abs(), 1e-3, 0.9, 10.0, 0.1, 1e-15, False, False),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_bench_cases_agree_on_cpu():
    (case, *_) = kernels()["sophia_update"].bench_cases()
    assert case.bytes_moved > 0
    a = case.make(torch.device("cpu"))
    b = [t.clone() for t in a]
    out = case.torch_fn(*a)
    assert torch.isfinite(out).all()
    assert not torch.equal(out, b[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1.0}, "lr"),
        ({"beta1": 1.0}, "beta1"),
        ({"rho_bs": -1.0}, "rho_bs"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_scalars(kwargs, match):
    p, g, m, h = _inputs((8,), seed=7)
    args = {"lr": 1e-3, "beta1": 0.9, "rho_bs": 1.0, "weight_decay": 0.0, "eps": 1e-15}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sophia_update(p, g, m, h, **args)


def test_bad_tensors():
    p, g, m, h = _inputs((8,), seed=8)
    with pytest.raises(ValueError, match="shape"):
        sophia_update(p, g[:4], m, h, 1e-3, 0.9, 1.0, 0.0, 1e-15)
    with pytest.raises(TypeError, match="floating"):
        sophia_update(p, g.long(), m, h, 1e-3, 0.9, 1.0, 0.0, 1e-15)
