"""Graphon estimators against known graphons and an independent plain implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle
from torch_geometric.data import Data

from trainforge_w2pgnn import estimate_graphon, resize_graphon, sample_graphs, synthetic_graphon


def _er_graphs(gen, p=0.3, num=50, n=100):
    return sample_graphs(torch.full((4, 4), p, dtype=torch.float64), num, n, gen)


def test_sas_on_er_graphs_recovers_p(gen):
    g = estimate_graphon(_er_graphs(gen), "sas", resolution=100)
    assert g.values.shape == (100, 100)
    assert (g.values - 0.3).abs().mean().item() < 0.05


@pytest.mark.parametrize("method", ["lg", "usvt", "mc"])
def test_other_estimators_on_er_graphs(gen, method):
    g = estimate_graphon(_er_graphs(gen, num=30, n=60), method, resolution=30)
    assert (g.values - 0.3).abs().mean().item() < 0.08
    assert g.values.min() >= 0 and g.values.max() <= 1


def _sbm(r=40):
    w = torch.full((r, r), 0.1, dtype=torch.float64)
    w[: r // 2, : r // 2] = 0.8
    w[r // 2 :, r // 2 :] = 0.3
    return w


def test_sas_recovers_sbm_blocks_with_light_denoising(gen):
    # Blocks of unequal degree, so degree sorting can separate them.
    graphs = sample_graphs(_sbm(), 40, 80, gen)
    v = estimate_graphon(graphs, "sas", resolution=40, tv_weight=0.05).values
    tl, br, off = v[2:18, 2:18].mean(), v[22:, 22:].mean(), v[2:18, 22:].mean()
    assert abs(tl - 0.8) < 0.1 and abs(br - 0.3) < 0.1 and abs(off - 0.1) < 0.1


def test_sas_reference_weight_flattens_blocks(gen):
    # The reference's TV weight (the block size h) is large next to values in [0, 1]:
    # the same SBM comes out nearly flat. Documented in the README.
    graphs = sample_graphs(_sbm(), 40, 80, gen)
    v = estimate_graphon(graphs, "sas", resolution=40).values
    assert (v.max() - v.min()).item() < 0.15
    assert abs(v.mean().item() - 0.33) < 0.05


def _plain_sas(graphs: list[Data], r: int) -> np.ndarray:
    """Straightforward SAS: loops, python sorting, pixel-by-pixel bilinear resize."""
    adjs = []
    for g in graphs:
        n = g.num_nodes
        a = [[0.0] * n for _ in range(n)]
        for s, t in g.edge_index.T.tolist():
            a[s][t] = 1.0
        deg = [
            0.5 * sum(a[i][j] for j in range(n)) + 0.5 * sum(a[j][i] for j in range(n))
            for i in range(n)
        ]
        order = sorted(range(n), key=lambda i: (deg[i], i), reverse=True)
        adjs.append([[a[i][j] for j in order] for i in order])
    n_max = max(len(a) for a in adjs)
    mean = np.zeros((n_max, n_max))
    for a in adjs:
        for i in range(len(a)):
            for j in range(len(a)):
                mean[i, j] += a[i][j] / len(adjs)
    h = int(math.log2(n_max) + 1)
    k = n_max // h
    blocks = np.zeros((k, k))
    for bi in range(k):
        for bj in range(k):
            blocks[bi, bj] = mean[bi * h : (bi + 1) * h, bj * h : (bj + 1) * h].sum() / h**2
    step = denoise_tv_chambolle(blocks, weight=h)
    out = np.zeros((r, r))
    scale = k / r
    for y in range(r):
        sy = min(max((y + 0.5) * scale - 0.5, 0.0), k - 1)
        y0 = math.floor(sy)
        y1, fy = min(y0 + 1, k - 1), sy - y0
        for x in range(r):
            sx = min(max((x + 0.5) * scale - 0.5, 0.0), k - 1)
            x0 = math.floor(sx)
            x1, fx = min(x0 + 1, k - 1), sx - x0
            top = step[y0, x0] * (1 - fx) + step[y0, x1] * fx
            bot = step[y1, x0] * (1 - fx) + step[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bot * fy
    return out


def test_sas_matches_plain_implementation(gen):
    graphs = sample_graphs(synthetic_graphon(0, 50), 6, (20, 40), gen)
    ours = estimate_graphon(graphs, "sas", resolution=23).values.numpy()
    np.testing.assert_allclose(ours, _plain_sas(graphs, 23), atol=1e-12)


def test_resize_constant_and_shape():
    out = resize_graphon(torch.full((7, 7), 0.25), 31)
    assert out.shape == (31, 31)
    torch.testing.assert_close(out, torch.full((31, 31), 0.25, dtype=torch.float64))


def test_sample_graphs_are_undirected_with_the_graphon_density(gen):
    graphs = sample_graphs(torch.full((3, 3), 0.2, dtype=torch.float64), 20, 50, gen)
    edges = 0
    for g in graphs:
        ei = g.edge_index
        assert (ei[0] != ei[1]).all()
        a = torch.zeros(50, 50)
        a[ei[0], ei[1]] = 1
        assert torch.equal(a, a.T)
        edges += ei.shape[1]
    assert abs(edges / (20 * 50 * 49) - 0.2) < 0.01


def test_synthetic_graphons_are_graphons():
    for kind in range(13):
        w = synthetic_graphon(kind, 20)
        assert w.shape == (20, 20)
        assert torch.allclose(w, w.T) and w.min() >= 0 and w.max() <= 1
