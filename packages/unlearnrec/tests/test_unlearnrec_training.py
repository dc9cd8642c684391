"""Toy-training effects (slow): the spec's planted-community toy, asserted over 2 seeds."""

import pytest
import torch

from trainforge_unlearnrec import (
    FinetuneConfig,
    InfluenceEncoder,
    PretrainConfig,
    UnlearnRecModel,
    edge_scores,
    inject_random_edges,
    lightgcn,
    planted_communities,
    pretrain,
    recall_at_k,
    sample_non_edges,
    split_request,
    train_lightgcn,
    unlearn,
    zero_shot,
)


def _run(seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    clean = planted_communities(300, 400, 6, 20, seed=seed)
    g, fake = inject_random_edges(clean, 150, seed=seed)
    nu, ni = g.num_users, g.num_items
    base = lightgcn(g.num_nodes, 32, 3, seed=seed)
    train_lightgcn(base, g.train, nu, ni, epochs=20, batch_size=2048, lr=2e-2, seed=seed)
    remain, _ = split_request(g.train, fake, nu, ni)
    neg = sample_non_edges(g.train, nu, ni, 2000, seed=seed)
    out: dict[str, float] = {}
    with torch.no_grad():
        e = base(g.edge_index())
        out["orig"] = float(edge_scores(e[:nu], e[nu:], fake).mean())
        out["neg"] = float(edge_scores(e[:nu], e[nu:], neg).mean())
        e = base.propagate(base.init_embeddings(), g.edge_index(remain))
        out["removal"] = float(edge_scores(e[:nu], e[nu:], fake).mean())
        out["removal_recall"] = recall_at_k(e[:nu], e[nu:], remain, g.test, 20)
    model = UnlearnRecModel(base, InfluenceEncoder(g.num_nodes, 32, 3), nu, ni, g.edge_index())
    untrained = zero_shot(model, g.train, fake)
    out["untrained"] = float(edge_scores(untrained.user_emb, untrained.item_emb, fake).mean())
    cfg = PretrainConfig(epochs=12, steps_per_epoch=4, resample_every=4, seed=seed)
    pretrain(model, g.train, cfg)
    zs = zero_shot(model, g.train, fake)
    out["zero_shot"] = float(edge_scores(zs.user_emb, zs.item_emb, fake).mean())
    out["zero_shot_recall"] = recall_at_k(zs.user_emb, zs.item_emb, remain, g.test, 20)
    ft = unlearn(model, g.train, fake, FinetuneConfig(epochs=2, steps_per_epoch=3, seed=seed))
    out["ft"] = float(edge_scores(ft.user_emb, ft.item_emb, fake).mean())
    out["ft_recall"] = recall_at_k(ft.user_emb, ft.item_emb, remain, g.test, 20)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_pretrained_encoder_forgets_more_than_edge_removal(seed):
    r = _run(seed)
    print(seed, r)
    # memorisation: the trained base scores the fakes far above random non-edges
    assert r["orig"] > r["neg"] + 1.0, r
    # an untrained encoder (H0 = 0, eta = 0.002) is edge removal plus a tiny withdraw step
    assert abs(r["untrained"] - r["removal"]) < 0.25 * (r["orig"] - r["neg"]), r
    # the pre-trained encoder lowers the fakes' scores at least twice as much as removal
    assert r["orig"] - r["zero_shot"] > 2.0 * (r["orig"] - r["removal"]), r
    # ... while recall stays within 10% of edge removal's (spec: 0.9x)
    assert r["zero_shot_recall"] >= 0.9 * r["removal_recall"], r
    # fine-tuning keeps the forgetting (best-gap model kept) and the recall margin
    assert r["ft"] <= r["zero_shot"] + 0.1 * (r["orig"] - r["neg"]), r
    assert r["ft_recall"] >= 0.9 * r["removal_recall"], r
