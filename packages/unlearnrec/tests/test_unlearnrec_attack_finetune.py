"""Adversarial (least-scored) fake interactions and the guarded fine-tuning selection."""

import pytest
import torch

from trainforge_unlearnrec import (
    FinetuneConfig,
    InfluenceEncoder,
    PretrainConfig,
    RecGraph,
    UnlearnRecModel,
    adversarial_fake_edges,
    holdout_split,
    inject_adversarial_edges,
    lightgcn,
    planted_communities,
    pretrain,
    retrain_without,
    train_lightgcn,
    unlearn,
    zero_shot,
)
from trainforge_unlearnrec.training import _holdout


def _emb():
    # 3 users, 4 items, 1-d embeddings: score(u, i) = u * i
    users = torch.tensor([[1.0], [-2.0], [0.5]])
    items = torch.tensor([[3.0], [-1.0], [2.0], [-4.0]])
    return users, items


def test_adversarial_fakes_are_the_least_scored_counterparts():
    u, i = _emb()
    # ratio 1: every user and every item picks its least-scored counterpart
    fake = adversarial_fake_edges(u, i, ratio=1.0)
    # users: u0 -> i3 (-4), u1 -> i0 (-6), u2 -> i3 (-2)
    # items: i0 -> u1 (-6), i1 -> u0 (-1), i2 -> u1 (-4), i3 -> u0 (-4)
    expected = {(0, 3), (1, 0), (2, 3), (1, 0), (0, 1), (1, 2), (0, 3)}
    assert set(map(tuple, fake.t().tolist())) == expected
    assert fake.size(1) == len(expected)  # a pair picked from both sides appears once


def test_adversarial_fakes_skip_excluded_pairs_and_sample_a_share():
    u, i = _emb()
    exclude = torch.tensor([[0, 1], [3, 0]])  # forbid u0-i3 and u1-i0
    fake = adversarial_fake_edges(u, i, ratio=1.0, exclude=exclude)
    got = set(map(tuple, fake.t().tolist()))
    assert not got & {(0, 3), (1, 0)}
    # u0's next least-scored item is i1 (-1); u1's is i2 (-4); item i0 now picks u2 (1.5)
    assert {(0, 1), (1, 2), (2, 0)} <= got
    # ratio 0.5: int(0.5 * 3) = 1 user and 2 items, reproducible with the seed
    a = adversarial_fake_edges(u, i, ratio=0.5, seed=3)
    b = adversarial_fake_edges(u, i, ratio=0.5, seed=3)
    assert torch.equal(a, b) and 1 <= a.size(1) <= 3


def test_inject_adversarial_edges_adds_new_low_scored_edges():
    g = planted_communities(60, 80, 4, 10, seed=0)
    assert (g.num_users, g.num_items) == (60, 80)
    bb = lightgcn(g.num_nodes, 8, 2, seed=0)
    train_lightgcn(bb, g.train, g.num_users, g.num_items, epochs=3, batch_size=256, lr=1e-2)
    with torch.no_grad():
        e = bb(g.edge_index())
    attacked, fake = inject_adversarial_edges(g, e[:60], e[60:], ratio=0.5, seed=0)
    assert attacked.train.size(1) == g.train.size(1) + fake.size(1)
    assert 30 <= fake.size(1) <= 70
    keys = set((fake[0] * 80 + fake[1]).tolist())
    taken = torch.cat([g.train, g.test], 1)
    assert not keys & set((taken[0] * 80 + taken[1]).tolist())
    scores = (e[:60][fake[0]] * e[60:][fake[1]]).sum(1)
    all_scores = e[:60] @ e[60:].t()
    assert float(scores.mean()) < float(all_scores.mean())


def test_adversarial_fakes_reject_bad_input():
    u, i = _emb()
    with pytest.raises(ValueError, match="ratio"):
        adversarial_fake_edges(u, i, ratio=0.0)
    with pytest.raises(ValueError, match="ratio"):
        adversarial_fake_edges(u, i, ratio=1.5)
    with pytest.raises(TypeError, match="float tensor"):
        adversarial_fake_edges(u.long(), i)
    with pytest.raises(ValueError, match="same width"):
        adversarial_fake_edges(u, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="finite"):
        adversarial_fake_edges(u, torch.full((4, 1), float("nan")))
    with pytest.raises(ValueError, match="item ids"):
        adversarial_fake_edges(u, i, exclude=torch.tensor([[0], [9]]))
    full = torch.stack([torch.arange(3).repeat_interleave(4), torch.arange(4).repeat(3)])
    with pytest.raises(ValueError, match="every counterpart"):
        adversarial_fake_edges(u, i, ratio=1.0, exclude=full)
    with pytest.raises(ValueError, match="selects no"):
        adversarial_fake_edges(u[:1], i[:1], ratio=0.5)
    g = RecGraph(3, 4, torch.tensor([[0, 1, 2, 2], [0, 1, 2, 3]]), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="users"):
        inject_adversarial_edges(g, u[:2], i)
    with pytest.raises(TypeError, match="RecGraph"):
        inject_adversarial_edges(object(), u, i)


def test_retraining_equals_training_on_the_clean_graph():
    # the demo reuses the clean-graph model (which picks the adversarial fakes) as the
    # retraining baseline: retraining on the attacked graph minus the fakes is the same run
    g = planted_communities(40, 60, 4, 8, seed=1)
    nu, ni = g.num_users, g.num_items
    kw = {"epochs": 2, "batch_size": 128, "lr": 1e-2, "seed": 5}
    clean = lightgcn(g.num_nodes, 8, 2, seed=5)
    train_lightgcn(clean, g.train, nu, ni, **kw)
    with torch.no_grad():
        e = clean(g.edge_index())
    attacked, fake = inject_adversarial_edges(g, e[:nu], e[nu:], seed=0)
    rt = lightgcn(g.num_nodes, 8, 2, seed=5)
    remain, _ = retrain_without(rt, attacked.train, fake, nu, ni, **kw)
    assert torch.equal(remain, g.train)
    with torch.no_grad():
        assert torch.equal(rt(g.edge_index()), clean(g.edge_index()))


def _setup(seed=0):
    g = planted_communities(60, 80, 4, 10, seed=seed)
    bb = lightgcn(g.num_nodes, 8, 3, seed=seed)
    train_lightgcn(bb, g.train, 60, 80, epochs=4, batch_size=256, lr=2e-2, seed=seed)
    model = UnlearnRecModel(bb, InfluenceEncoder(g.num_nodes, 8), 60, 80, g.edge_index())
    pretrain(model, g.train, PretrainConfig(epochs=2, steps_per_epoch=2, resample_every=2))
    return g, model, g.train[:, ::7]


def test_guarded_fine_tuning_keeps_zero_shot_when_training_hurts_held_out_recall():
    g, model, req = _setup()
    enc_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    e0 = model.init_embeds.detach().clone()
    zs = zero_shot(model, g.train, req)
    # a destructive step size: every fine-tuned checkpoint ranks far worse than zero-shot
    cfg = FinetuneConfig(epochs=1, steps_per_epoch=4, batch_size=128, lr=0.1, check_every=1)
    bad = unlearn(model, g.train, req, FinetuneConfig(**{**cfg.__dict__, "select": "gap"}))
    assert bad.selected_step > 0  # the reference's best-gap rule takes a damaged model
    model.encoder.load_state_dict(enc_state)
    model.init_embeds.data.copy_(e0)
    ft = unlearn(model, g.train, req, cfg)
    assert ft.steps == [0, 1, 2, 3, 4] and len(ft.val_recalls) == 5
    assert max(ft.val_recalls[1:]) < ft.val_recalls[0]
    assert ft.selected_step == 0
    torch.testing.assert_close(ft.user_emb, zs.user_emb)
    torch.testing.assert_close(ft.item_emb, zs.item_emb)


def test_guarded_fine_tuning_takes_a_checkpoint_that_keeps_recall_and_stops_early():
    g, model, req = _setup()
    cfg = FinetuneConfig(
        epochs=2, steps_per_epoch=3, batch_size=128, lr=1e-3, check_every=1,
        recall_tolerance=0.5, trainable=("e0",),
    )  # fmt: skip
    ft = unlearn(model, g.train, req, cfg)
    assert ft.selected_step > 0
    sel = ft.steps.index(ft.selected_step)
    assert ft.val_recalls[sel] >= 0.5 * ft.val_recalls[0]
    assert ft.gaps[sel] == max(
        gp for gp, r in zip(ft.gaps, ft.val_recalls, strict=True) if r >= 0.5 * ft.val_recalls[0]
    )
    # patience: stops after 2 failing checks in a row
    stop = unlearn(
        model, g.train, req,
        FinetuneConfig(epochs=3, steps_per_epoch=4, batch_size=128, lr=0.1, check_every=1,
                       patience=2),
    )  # fmt: skip
    assert stop.steps == [0, 1, 2]
    # the steps after the last periodic check are checked too
    end = unlearn(
        model, g.train, req,
        FinetuneConfig(epochs=1, steps_per_epoch=3, batch_size=128, check_every=2),
    )  # fmt: skip
    assert end.steps == [0, 2, 3]


def test_holdout_and_finetune_config_reject_bad_input(tiny_graph):
    fit, val = _holdout(tiny_graph.train, 0.2, 0)
    assert fit.size(1) + val.size(1) == tiny_graph.train.size(1) and val.size(1) >= 1
    with pytest.raises(ValueError, match="select"):
        FinetuneConfig(select="best")
    with pytest.raises(ValueError, match="trainable"):
        FinetuneConfig(trainable=())
    with pytest.raises(ValueError, match="trainable"):
        FinetuneConfig(trainable=("h0",))
    with pytest.raises(ValueError, match="val_share"):
        FinetuneConfig(val_share=1.0)
    with pytest.raises(ValueError, match="recall_tolerance"):
        FinetuneConfig(recall_tolerance=-0.1)
    with pytest.raises(ValueError, match="check_every"):
        FinetuneConfig(check_every=-1)
    with pytest.raises(ValueError, match="patience"):
        FinetuneConfig(patience=1.5)
    with pytest.raises(ValueError, match="val_k"):
        FinetuneConfig(val_k=0)
    with pytest.raises(TypeError, match="FinetuneConfig"):
        g, model, req = _setup()
        unlearn(model, g.train, req, PretrainConfig())


def test_holdout_split_keeps_every_node_and_rejects_bad_input():
    g = planted_communities(60, 80, 4, 10, seed=0)
    fit, val = holdout_split(g.train, 60, 80, 0.2, seed=1)
    assert fit.size(1) + val.size(1) == g.train.size(1) and val.size(1) > 0.1 * g.train.size(1)
    assert bool((torch.bincount(fit[0], minlength=60) > 0).all())
    assert bool((torch.bincount(fit[1], minlength=80) > 0).all())
    keys = set((fit[0] * 80 + fit[1]).tolist())
    assert not keys & set((val[0] * 80 + val[1]).tolist())
    with pytest.raises(ValueError, match="share"):
        holdout_split(g.train, 60, 80, 1.0)
    with pytest.raises(ValueError, match="too sparse"):
        holdout_split(torch.tensor([[0, 1], [0, 1]]), 2, 2, 0.5)


def test_guard_uses_unseen_validation_pairs():
    g, model, req = _setup()
    zs = zero_shot(model, g.train, req)
    cfg = FinetuneConfig(epochs=1, steps_per_epoch=4, batch_size=128, lr=0.1, check_every=1)
    # g.test was never in the graph: the guard ranks it against the remaining train items
    ft = unlearn(model, g.train, req, cfg, val_pairs=g.test)
    from trainforge_unlearnrec import recall_at_k, split_request

    remain, _ = split_request(g.train, req, 60, 80)
    assert ft.val_recalls[0] == pytest.approx(recall_at_k(zs.user_emb, zs.item_emb, remain, g.test))
    sel = ft.steps.index(ft.selected_step)
    assert ft.val_recalls[sel] >= ft.val_recalls[0]
    with pytest.raises(ValueError, match="held out"):
        unlearn(model, g.train, req, cfg, val_pairs=g.train[:, :3])
    with pytest.raises(ValueError, match="empty"):
        unlearn(model, g.train, req, cfg, val_pairs=torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="only used"):
        unlearn(model, g.train, req, FinetuneConfig(select="gap"), val_pairs=g.test)


def test_run_arms_random_attack_and_bad_attack():
    from trainforge_unlearnrec.demo import _QUICK, run_arms

    arms = run_arms(_QUICK, 0, "random")
    assert set(arms.results) >= {"retrain", "edge removal", "UnlearnRec zero-shot"}
    assert arms.fake.size(1) == max(10, int(_QUICK.fake_share * arms.clean.train.size(1)))
    keys = set((arms.val[0] * arms.graph.num_items + arms.val[1]).tolist())
    train = arms.graph.train
    assert not keys & set((train[0] * arms.graph.num_items + train[1]).tolist())
    with pytest.raises(ValueError, match="attack"):
        run_arms(_QUICK, 0, "least")
