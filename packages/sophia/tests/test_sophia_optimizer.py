"""SophiaG / SophiaH update rule: golden values, the reference trajectory, invariants."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import trainforge_sophia.optimizer as sopt
from trainforge_sophia import SophiaG, SophiaH, decay_groups, gnb_loss


# -- an independent re-statement of Liuhong99/Sophia:sophia.py (non-capturable path) --------
class RefSophiaG:
    def __init__(self, params, lr, betas, rho, weight_decay):
        self.params = list(params)
        self.lr, self.betas, self.rho, self.wd = lr, betas, rho, weight_decay
        self.m = [torch.zeros_like(p) for p in self.params]
        self.h = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def update_hessian(self):
        for p, h in zip(self.params, self.h, strict=True):
            if p.grad is not None:
                h.mul_(self.betas[1]).addcmul_(p.grad, p.grad, value=1 - self.betas[1])

    @torch.no_grad()
    def step(self, bs):
        for p, m, h in zip(self.params, self.m, self.h, strict=True):
            if p.grad is None:
                continue
            p.mul_(1 - self.lr * self.wd)
            m.mul_(self.betas[0]).add_(p.grad, alpha=1 - self.betas[0])
            ratio = (m.abs() / (self.rho * bs * h + 1e-15)).clamp(None, 1)
            p.addcmul_(m.sign(), ratio, value=-self.lr)


def _mlp(seed=0, width=16):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 4))


def _data(seed=0, n=32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def _gnb_backward(model, x, gen):
    logits = model(x)
    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1, generator=gen).squeeze(-1)
    nn.functional.cross_entropy(logits, y).backward()


def _trajectory(model, opt, steps, bs, seed, update):
    x, y = _data(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for t in range(steps):
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if isinstance(opt, RefSophiaG):
            opt.step(bs)
        else:
            opt.step(bs=bs)
        if t % 10 == 9:  # train_sophiag.py: iter_num % k == k - 1
            model.zero_grad()
            _gnb_backward(model, x, gen)
            update(opt)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("foreach", [None, True, False])
def test_50_steps_bit_identical_to_reference(foreach, monkeypatch):
    # small chunk sizes so the chunked in-place CPU path and the foreach batch both run
    monkeypatch.setattr(sopt, "_CHUNK", 40)
    monkeypatch.setattr(sopt, "_SMALL", 20)
    kw = dict(lr=3e-2, betas=(0.965, 0.99), rho=0.05, weight_decay=0.2)
    ref_model, our_model = _mlp(), _mlp()
    ref = RefSophiaG(ref_model.parameters(), **kw)
    ours = SophiaG(our_model.parameters(), **kw, foreach=foreach)
    a = _trajectory(ref_model, ref, 50, 512, 0, lambda o: o.update_hessian())
    b = _trajectory(our_model, ours, 50, 512, 0, lambda o: o.update_hessian())
    assert ours.param_groups[0]["hessian_updates"] == 5
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
    # and the clip really mixes clipped and unclipped coordinates on this run
    win = ours.stats()["win_rate"]
    assert 0.0 < win < 1.0


def test_fused_50_steps_equal_reference_up_to_rounding():
    kw = dict(lr=3e-2, betas=(0.965, 0.99), rho=0.05, weight_decay=0.2)
    ref_model, our_model = _mlp(), _mlp()
    ref = RefSophiaG(ref_model.parameters(), **kw)
    ours = SophiaG(our_model.parameters(), **kw, fused=True)
    a = _trajectory(ref_model, ref, 50, 512, 0, lambda o: o.update_hessian())
    b = _trajectory(our_model, ours, 50, 512, 0, lambda o: o.update_hessian())
    for pa, pb in zip(a, b, strict=True):
        # one compiled pass may contract multiply-adds: equal up to float rounding
        torch.testing.assert_close(pb, pa, rtol=1e-5, atol=1e-6)
    assert 0.0 < ours.stats()["win_rate"] < 1.0


def test_golden_three_steps_with_decay_and_clipping():
    lr, b1, b2, rho, wd, bs = 0.1, 0.9, 0.5, 0.5, 0.1, 2
    p = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = SophiaG([p], lr=lr, betas=(b1, b2), rho=rho, weight_decay=wd, bs=bs,
                  hessian_interval=1)  # fmt: skip
    # Hessian estimate g_hat = [1, 2, 0.1] -> h = 0.5 * g_hat^2 = [0.5, 2, 0.005]
    p.grad = torch.tensor([1.0, 2.0, 0.1], dtype=torch.float64)
    opt.update_hessian()
    grads = [[0.5, -1.0, 0.2], [0.5, -1.0, 0.2], [-4.0, 0.0, 0.2]]
    # hand computation, in python floats
    theta, m, h = [1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.5, 2.0, 0.005]
    for g in grads:
        theta = [t * (1 - lr * wd) for t in theta]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
        ratio = [min(abs(mi) / (rho * bs * hi + 1e-15), 1.0) for mi, hi in zip(m, h, strict=True)]
        theta = [
            t - lr * math.copysign(1, mi) * r for t, mi, r in zip(theta, m, ratio, strict=True)
        ]
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    # step 1 by hand: m = [0.05, -0.1, 0.02], d = rho*bs*h = [0.5, 2, 0.005],
    # ratio = [0.1, 0.05, 1 (clipped)]: theta = [0.99 - 0.01, -1.98 + 0.005, 0.495 - 0.1]
    torch.testing.assert_close(p.detach(), torch.tensor(theta, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    m_state = opt.state[p]["exp_avg"]
    torch.testing.assert_close(m_state, torch.tensor(m, dtype=torch.float64))


def test_h_zero_is_exactly_sign_momentum_after_decay():
    p = torch.randn(100, requires_grad=True)
    p0 = p.detach().clone()
    g = torch.randn(100)
    p.grad = g.clone()
    opt = SophiaG([p], lr=1e-2, betas=(0.9, 0.99), rho=0.05, weight_decay=0.1)
    opt.step()  # bs not needed while h = 0
    expected = p0 * (1 - 1e-2 * 0.1) - 1e-2 * torch.sign(0.1 * g)
    assert torch.equal(p.detach(), expected)


def test_no_nan_when_h_and_m_are_zero():
    p = torch.ones(10, requires_grad=True)
    p.grad = torch.zeros(10)
    opt = SophiaG([p], lr=1e-2, bs=10)
    opt.step()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.detach(), torch.full((10,), 1 - 1e-2 * 0.2))


@pytest.mark.parametrize("seed", [0, 1])
def test_update_bounded_by_lr_per_coordinate(seed):
    model = _mlp(seed)
    opt = SophiaG(model.parameters(), lr=1e-2, rho=0.01, weight_decay=0.3, bs=32)
    x, y = _data(seed)
    gen = torch.Generator().manual_seed(seed)
    for t in range(25):
        before = [p.detach().clone() for p in model.parameters()]
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        for p, q in zip(model.parameters(), before, strict=True):
            delta = p.detach() - q * (1 - 1e-2 * 0.3)
            assert delta.abs().max() <= 1e-2 * (1 + 1e-5)
        if t % 10 == 9:
            with opt.hessian_context(grad_clip=1.0):
                _gnb_backward(model, x, gen)


def test_hessian_changes_only_on_interval_steps():
    from trainforge_sophia import maybe_update_hessian

    model = _mlp()
    opt = SophiaG(model.parameters(), lr=1e-2, bs=32, hessian_interval=4)
    x, y = _data()

    def logits_fn(m, batch):
        return m(batch), None

    changed = []
    for _ in range(12):
        before = [opt.state[p]["hessian"].clone() for p in model.parameters() if opt.state[p]]
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mid = [opt.state[p]["hessian"].clone() for p in model.parameters()]
        if before:  # a plain step never touches h
            assert all(torch.equal(a, b) for a, b in zip(before, mid, strict=True))
        ran = maybe_update_hessian(opt, model, x, logits_fn=logits_fn)
        after = [opt.state[p]["hessian"] for p in model.parameters()]
        changed.append(ran and not all(torch.equal(a, b) for a, b in zip(mid, after, strict=True)))
        assert not opt.hessian_due()
    assert changed == [s % 4 == 3 for s in range(12)]
    assert opt.param_groups[0]["n_predictions"] == 32


def test_win_rate_in_unit_interval_and_rises_with_rho():
    rates = []
    for rho in (0.001, 0.01, 0.1, 1.0):
        model = _mlp()
        opt = SophiaG(model.parameters(), lr=1e-2, rho=rho, bs=32)
        _trajectory(model, opt, 20, 32, 0, lambda o: o.update_hessian())
        stats = opt.stats()
        assert 0.0 <= stats["win_rate"] <= 1.0
        assert stats["clip_frac"] == pytest.approx(1 - stats["win_rate"])
        assert stats["hessian_l1"] > 0
        rates.append(stats["win_rate"])
    assert rates == sorted(rates) and rates[-1] > rates[0]


def test_state_dict_round_trip_continues_identically():
    model_a = _mlp()
    opt_a = SophiaG(decay_groups(model_a, 0.2), lr=1e-2, bs=32, hessian_interval=5)
    _trajectory(model_a, opt_a, 12, 32, 0, lambda o: o.update_hessian())
    model_b = _mlp(seed=5)
    model_b.load_state_dict(model_a.state_dict())
    opt_b = SophiaG(decay_groups(model_b, 0.0), lr=1.0, bs=1, hessian_interval=5)
    buffer = io.BytesIO()  # through bytes, as a checkpoint would (no aliasing of state)
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    opt_b.load_state_dict(torch.load(buffer))
    assert opt_b.param_groups[0]["weight_decay"] == 0.2
    assert opt_b.steps_done == 12
    a = _trajectory(model_a, opt_a, 8, 32, 3, lambda o: o.update_hessian())
    b = _trajectory(model_b, opt_b, 8, 32, 3, lambda o: o.update_hessian())
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)


def test_maximize_equals_minimizing_the_negation():
    torch.manual_seed(0)
    w1 = torch.randn(20, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    o1 = SophiaG([w1], lr=1e-2, bs=1, maximize=True)
    o2 = SophiaG([w2], lr=1e-2, bs=1)
    for _ in range(15):
        for w, o, sign in ((w1, o1, -1.0), (w2, o2, 1.0)):
            o.zero_grad()
            (sign * ((w - 1.0) ** 2).sum()).backward()
            o.step()
            if o.hessian_due():
                o.update_hessian()
    assert torch.equal(w1, w2)


def test_per_group_hyper_parameters():
    a = torch.zeros(5, requires_grad=True)
    b = torch.zeros(5, requires_grad=True)
    opt = SophiaG([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01, "weight_decay": 0.0}],
                  bs=1)  # fmt: skip
    a.grad = torch.ones(5)
    b.grad = -torch.ones(5)
    opt.step()  # h = 0: a pure sign step of each group's lr
    torch.testing.assert_close(a.detach(), torch.full((5,), -0.1))
    torch.testing.assert_close(b.detach(), torch.full((5,), 0.01))


def test_bs_is_required_once_h_is_set_and_can_be_recorded():
    p = torch.randn(4, requires_grad=True)
    opt = SophiaG([p], lr=1e-2)
    p.grad = torch.ones(4)
    opt.update_hessian()
    with pytest.raises(ValueError, match="bs"):
        opt.step()
    opt.step(bs=8)
    opt.update_hessian(n_predictions=8)
    opt.step()


# -- SophiaH ---------------------------------------------------------------------------------
def test_sophiah_matches_kozistr_rule_with_same_probes():
    """kozistr SophiaH (p=rho, lr_k): update = clamp(m / max(hm, eps_k), -p, p); p -= lr_k * u.
    Ours with lr = lr_k * p and eps = p * eps_k is the same map (up to eps added vs max)."""
    torch.manual_seed(0)
    a = torch.rand(30) + 0.1
    target = torch.randn(30)
    w_k = torch.randn(30)
    w = w_k.clone().requires_grad_(True)
    lr_k, p_clip, eps_k, b1, b2 = 0.5, 0.01, 1e-12, 0.96, 0.99
    opt = SophiaH([w], lr=lr_k * p_clip, betas=(b1, b2), rho=p_clip, weight_decay=0.0,
                  eps=p_clip * eps_k, hessian_interval=3)  # fmt: skip
    m_k, hm_k = torch.zeros(30), torch.zeros(30)
    gen = torch.Generator().manual_seed(1)
    for t in range(40):
        # a non-quadratic loss so the Hessian changes: sum a * (w - target)^4 / 4 + ...
        g_k = a * (w_k - target) ** 3 + 0.1 * w_k
        opt.zero_grad()
        loss = (a * (w - target) ** 4 / 4 + 0.05 * w**2).sum()
        loss.backward()
        m_k = b1 * m_k + (1 - b1) * g_k
        u = (m_k / torch.clamp(hm_k, min=eps_k)).clamp(-p_clip, p_clip)
        w_k = w_k - lr_k * u
        opt.step()
        if t % 3 == 2:
            z = torch.randn(30, generator=gen)
            hess_diag = 3 * a * (w_k - target) ** 2 + 0.1
            hm_k = b2 * hm_k + (1 - b2) * z * hess_diag * z
            from trainforge_sophia import hutchinson_diag

            w_loss = (a * (w - target) ** 4 / 4 + 0.05 * w**2).sum()
            (est,) = hutchinson_diag(w_loss, [w], probes=[[z]])
            opt.update_hessian([est])
        torch.testing.assert_close(w.detach(), w_k, rtol=1e-5, atol=1e-6)


def test_sophiah_negative_hessian_saturates():
    w = torch.zeros(3, requires_grad=True)
    opt = SophiaH([w], lr=0.1, rho=1.0, weight_decay=0.0)
    opt.update_hessian([torch.tensor([-5.0, -5.0, 5.0])])
    w.grad = torch.tensor([1.0, -1.0, 1e-3])
    opt.step()
    # negative h: full sign steps; positive h: m / (rho * h) = 1e-4 * 0.035 / (0.05)
    m = 0.035 * torch.tensor([1.0, -1.0, 1e-3])
    expected = torch.tensor([-0.1, 0.1, -0.1 * float(m[2]) / (0.01 * 5.0)])
    torch.testing.assert_close(w.detach(), expected)


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"rho": -0.1}, "rho"),
        ({"eps": -1e-15}, "eps"),
        ({"eps": 0.0}, "eps"),
        ({"betas": (1.0, 0.99)}, r"betas\[0\]"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"bs": 0}, "bs"),
        ({"bs": -5}, "bs"),
        ({"hessian_interval": 0}, "hessian_interval"),
        ({"lr": math.inf}, "lr"),
        ({"weight_decay": math.inf}, "weight_decay"),
        ({"rho": math.nan}, "rho"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SophiaG([torch.zeros(2, requires_grad=True)], **kwargs)


def test_rejected_param_group_is_not_kept():
    model = nn.Linear(3, 2)
    opt = SophiaG([model.weight], lr=1e-3)
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [model.bias], "lr": -1.0})
    assert len(opt.param_groups) == 1
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # the half-added group used to fail here with KeyError: 'step'
    assert opt.steps_done == 1


def test_bad_types_and_sophiah_args():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match="betas"):
        SophiaG(p, betas=0.9)
    with pytest.raises(TypeError, match="lr"):
        SophiaG(p, lr="fast")
    with pytest.raises(ValueError, match="dist"):
        SophiaH(p, dist="uniform")
    with pytest.raises(ValueError, match="n_samples"):
        SophiaH(p, n_samples=0)
    with pytest.raises(ValueError, match="rho"):
        SophiaH(p, rho=-1.0)
    with pytest.raises(TypeError, match="floating"):
        SophiaG([torch.zeros(2, dtype=torch.long)])
    with pytest.raises(TypeError, match="Module"):
        decay_groups([torch.zeros(2)], 0.1)


def test_bad_fused_flags():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(TypeError, match="fused"):
        SophiaG(p, fused="yes")
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        SophiaH(p, fused=True, foreach=True)


def test_step_bs_must_be_positive():
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.ones(2)
    opt = SophiaG([p])
    with pytest.raises(ValueError, match="bs"):
        opt.step(bs=0)


def test_sparse_gradients_are_rejected():
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = SophiaG(emb.parameters(), bs=2)
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    with pytest.raises(ValueError, match="sparse"):
        opt.update_hessian()


def test_estimate_without_backward_is_an_error():
    p = torch.zeros(2, requires_grad=True)
    opt = SophiaG([p], bs=2)
    with pytest.raises(ValueError, match="backward"):
        opt.update_hessian()
    with pytest.raises(ValueError, match="backward"), opt.hessian_context():
        pass  # the body forgot to backward the GNB loss
    h = SophiaH([p])
    with pytest.raises(ValueError, match="estimates"):
        h.update_hessian([])


# -- fused=True against the reference: what differs, exactly (issue #14.5) -----------------
def _unfused_step(p, g, m, h, *, lr, beta1, rho_bs, weight_decay, eps):
    """The reference step with every product rounded on its own (no fused multiply-add):
    the arithmetic of the compiled ``fused=True`` loop on CPU."""
    f32 = p.dtype
    b1, omb = torch.tensor(beta1, dtype=f32), torch.tensor(1.0 - beta1, dtype=f32)
    decay, lr_t = torch.tensor(1.0 - lr * weight_decay, dtype=f32), torch.tensor(lr, dtype=f32)
    m_new = (m * b1) + (g * omb)  # two products, each rounded, then the sum
    u = (m_new / (h * rho_bs + eps)).clamp(-1.0, 1.0)
    return (p * decay) - (u * lr_t), m_new


def test_fused_differs_from_reference_only_by_unfused_multiply_adds():
    """A model of realistic shape (a 2-layer Llama, 0.5M parameters), 12 steps with real
    gradients and Hessian estimates after steps 4 and 8. The eager path (sophia.py's ops)
    computes
    ``m*beta1 + (1-beta1)*g`` and ``p*decay - lr*u`` with one rounding each (ATen's CPU
    ``add_(alpha=)`` is a fused multiply-add); the compiled loop rounds each product. Every
    fused step equals that two-rounding formula bit for bit, and differs from the reference
    step by at most the bounds that follow from it."""
    from trainforge_core.models import tiny_llama

    torch.manual_seed(0)
    model = tiny_llama(vocab_size=512, hidden_size=128, num_layers=2, num_heads=4,
                       max_position_embeddings=32)  # fmt: skip
    params = [p for p in model.parameters()]
    assert sum(p.numel() for p in params) > 400_000
    kw = dict(lr=3e-4, beta1=0.965, rho=0.05, weight_decay=0.2)
    opt = SophiaG(params, lr=kw["lr"], betas=(kw["beta1"], 0.99), rho=kw["rho"],
                  weight_decay=kw["weight_decay"], bs=256, fused=True)  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 512, (4, 32), generator=gen)
    eps32 = torch.finfo(torch.float32).eps
    flips = differ = 0
    for t in range(12):
        model.zero_grad()
        model(input_ids=x, labels=x).loss.backward()
        before = {
            p: (p.detach().clone(), *(opt.state[p][k].clone() for k in ("exp_avg", "hessian")))
            for p in params
            if p in opt.state
        }
        opt.step()
        for p in before:
            p0, m0, h0 = before[p]
            step = dict(lr=kw["lr"], beta1=kw["beta1"], rho_bs=kw["rho"] * 256,
                        weight_decay=kw["weight_decay"], eps=1e-15)  # fmt: skip
            p_two, m_two = _unfused_step(p0, p.grad, m0, h0, **step)
            m_f = opt.state[p]["exp_avg"]
            assert torch.equal(m_f, m_two) and torch.equal(p.detach(), p_two)
            p_ref, m_ref = p0.clone(), m0.clone()
            sopt.sophia_update_reference(p_ref, p.grad, m_ref, h0.clone(), **step)
            # m: one extra rounding of (1-beta1)*g (half an ulp of it) and of the sum
            assert ((m_f - m_ref).abs() <= eps32 * ((1 - kw["beta1"]) * p.grad.abs()
                                                   + m_ref.abs())).all()  # fmt: skip
            # p: the clipped ratios u differ through m; plus one rounding of lr*u and of p
            d = h0 * (kw["rho"] * 256) + 1e-15
            du = ((m_f / d).clamp(-1, 1) - (m_ref / d).clamp(-1, 1)).abs()
            bound = kw["lr"] * du + eps32 * (p_ref.abs() + kw["lr"])
            assert ((p.detach() - p_ref).abs() <= bound).all()
            flips += int((torch.sign(m_f) != torch.sign(m_ref)).sum())
            differ += int((m_f != m_ref).sum())
        if t % 4 == 3:
            model.zero_grad()
            gnb_loss(model(input_ids=x).logits, generator=gen).backward()
            opt.update_hessian(n_predictions=256)
    assert differ > 0  # the two roundings really differ on this run


def test_lr_tensor_must_be_finite():
    p = [torch.zeros(2, requires_grad=True)]
    for bad in (torch.tensor(math.inf), torch.tensor(math.nan), torch.tensor(-1.0)):
        with pytest.raises(ValueError, match="lr"):
            SophiaG(p, lr=bad)


@pytest.mark.parametrize("path", ["default", "foreach", "fused"])
def test_nan_gradient_propagates_like_torch_optim(path):
    """torch.optim's behaviour (AdamW with a NaN gradient writes NaN into the parameter, no
    error, no host sync): the NaN shows in the parameter and its momentum, and only there."""
    flags = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[path]
    p = torch.ones(70, requires_grad=True)
    opt = SophiaG([p], lr=0.1, bs=1, **flags)
    p.grad = torch.ones(70)
    p.grad[3] = math.nan
    opt.step()
    assert torch.isnan(p[3]) and torch.isnan(opt.state[p]["exp_avg"][3])
    assert torch.isfinite(torch.cat([p[:3], p[4:]])).all()
    q = torch.ones(70, requires_grad=True)
    adamw = torch.optim.AdamW([q], lr=0.1)
    q.grad = p.grad.clone()
    adamw.step()
    assert torch.equal(torch.isnan(q), torch.isnan(p))
