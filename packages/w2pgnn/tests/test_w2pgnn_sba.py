"""SBA (stochastic blockmodel approximation): known graphons and a plain loop of the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainforge_w2pgnn import estimate_graphon, graph_adjacency, sample_graphs
from trainforge_w2pgnn.graphon import _sba


def test_sba_recovers_er_density(gen):
    er = sample_graphs(torch.full((4, 4), 0.3, dtype=torch.float64), 30, 60, gen)
    g = estimate_graphon(er, "sba", resolution=30)
    # Degree sorting splits an ER set into a few degree bands (measured: 0.25-0.42 here);
    # the density is kept and the bands stay near p.
    assert abs(g.step_function.mean().item() - 0.3) < 0.01
    assert (g.values - 0.3).abs().mean().item() < 0.06


def test_sba_recovers_sbm_blocks(gen):
    w = torch.full((60, 60), 0.1, dtype=torch.float64)
    w[:30, :30], w[30:, 30:] = 0.8, 0.3
    g = estimate_graphon(sample_graphs(w, 30, 60, gen), "sba", resolution=60)
    v = g.values
    assert abs(v[:20, :20].mean().item() - 0.8) < 0.05
    assert abs(v[40:, 40:].mean().item() - 0.3) < 0.05
    assert abs(v[:20, 40:].mean().item() - 0.1) < 0.05
    assert torch.allclose(v, v.T)


def _plain_sba(aligned, threshold, order):
    # caoyxuan/W2PGNN:utils/learner.py:estimate_blocks_directed as loops, visiting `order`.
    g, n = aligned.shape[0], aligned.shape[1]
    half = g // 2
    w = 1 / ((half + 1) * (n - half))
    total = aligned.sum(0)
    h1 = aligned[:half].sum(0) if half > 1 else aligned[0]
    h2 = aligned[half:].sum(0) if g - half > 1 else aligned[-1]
    pivots, blocks = [0], {0: [0]}
    for i in order:
        dhat = []
        for bj in pivots:
            rest = [s for s in range(n) if s not in (i, bj)]
            t = [
                sum(w * h1[x, s] * h2[y, s] for s in rest)
                for x, y in ((i, i), (bj, bj), (i, bj), (bj, i))
            ]
            c = [
                sum(w * h1[s, x] * h2[s, y] for s in rest)
                for x, y in ((i, i), (bj, bj), (i, bj), (bj, i))
            ]
            gap = abs(t[0] + t[1] - t[2] - t[3]) + abs(c[0] + c[1] - c[2] - c[3])
            dhat.append((0.5 * gap / len(rest)) ** 0.5)
        j = int(np.argmin(dhat))
        if dhat[j] < threshold:
            blocks[j].append(i)
        else:
            blocks[len(pivots)] = [i]
            pivots.append(i)
    out = np.zeros((n, n))
    for rows in blocks.values():
        for cols in blocks.values():
            out[np.ix_(rows, cols)] = total[np.ix_(rows, cols)].sum() / (g * len(rows) * len(cols))
    return out


def test_sba_matches_a_plain_loop_of_the_reference(gen):
    w = torch.full((10, 10), 0.15, dtype=torch.float64)
    w[:5, :5] = 0.7
    graphs = sample_graphs(w, 6, (10, 14), gen)
    adjs = [graph_adjacency(d) for d in graphs]
    n = max(a.shape[0] for a in adjs)
    aligned = np.zeros((len(adjs), n, n))
    for k, a in enumerate(adjs):
        idx = np.argsort(0.5 * a.sum(0) + 0.5 * a.sum(1), kind="stable")[::-1]
        aligned[k, : a.shape[0], : a.shape[0]] = a[np.ix_(idx, idx)]
    for threshold, seed in ((0.1, 0), (0.3, 1), (0.05, 2)):
        order = [int(x) for x in np.random.default_rng(seed).permutation(np.arange(1, n))]
        np.testing.assert_allclose(
            _sba(aligned, threshold, seed), _plain_sba(aligned, threshold, order), atol=1e-12
        )
    ours = estimate_graphon(graphs, "sba", resolution=n, seed=0).step_function.numpy()
    np.testing.assert_allclose(
        ours,
        _plain_sba(
            aligned,
            0.1,
            order=[int(x) for x in np.random.default_rng(0).permutation(np.arange(1, n))],
        ),
        atol=1e-12,
    )


def test_sba_bad_input(gen):
    graphs = sample_graphs(torch.full((4, 4), 0.5, dtype=torch.float64), 4, 8, gen)
    with pytest.raises(ValueError, match="sba_threshold"):
        estimate_graphon(graphs, "sba", sba_threshold=0)
    with pytest.raises(ValueError, match="sba_threshold"):
        estimate_graphon(graphs, "sba", sba_threshold=float("nan"))
    with pytest.raises(TypeError, match="sba_threshold"):
        estimate_graphon(graphs, "sba", sba_threshold="0.1")
    with pytest.raises(TypeError, match="seed"):
        estimate_graphon(graphs, "sba", seed=0.5)
    # 16 graphs of at most 8 nodes: the reference's weight 1 / ((8 + 1) (8 - 8)) is undefined.
    many = sample_graphs(torch.full((4, 4), 0.5, dtype=torch.float64), 16, 8, gen)
    with pytest.raises(ValueError, match="divides by zero"):
        estimate_graphon(many, "sba")
