"""Graphon estimation from a set of graphs (W2PGNN, Sec. 4.1).

Every estimator first aligns the graphs by sorting each graph's nodes by descending degree and
zero-padding them to the largest graph (``caoyxuan/W2PGNN:utils/learner.py:align_graphs``),
averages the aligned adjacency matrices, estimates a step function from the average and
resizes it to an ``r x r`` graphon with bilinear interpolation (the reference uses
``cv2.resize(..., INTER_LINEAR)``; ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False)`` samples the same half-pixel grid).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data

__all__ = [
    "METHODS",
    "BarycenterConfig",
    "Graphon",
    "align_graphs",
    "check_graphs",
    "estimate_graphon",
    "graph_adjacency",
    "resize_graphon",
    "sample_graphs",
    "synthetic_graphon",
]

METHODS = ("sas", "lg", "usvt", "mc", "sba", "gwb", "sgwb", "fgwb", "sfgwb")
"""Graphon estimators `estimate_graphon` accepts as ``method``."""


@dataclass(frozen=True)
class Graphon:
    """An estimated graphon.

    ``values`` is the ``r x r`` discretised graphon (float64, in [0, 1]); ``step_function`` the
    estimator's raw output before resizing (``k x k`` blocks for SAS, ``n_max x n_max`` for
    the others, as in the reference).
    """

    values: torch.Tensor
    step_function: torch.Tensor
    method: str
    num_graphs: int
    max_nodes: int

    @property
    def resolution(self) -> int:
        return int(self.values.shape[0])

    def resize(self, resolution: int) -> Graphon:
        """The same graphon re-sampled at another resolution (bilinear)."""
        return Graphon(
            resize_graphon(self.step_function, resolution),
            self.step_function,
            self.method,
            self.num_graphs,
            self.max_nodes,
        )


def _check_resolution(resolution: object, name: str = "resolution") -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise TypeError(f"{name} must be an int >= 2, got {resolution!r}")
    if resolution < 2:
        raise ValueError(f"{name} must be >= 2, got {resolution}")
    return int(resolution)


def check_graphs(graphs: object, name: str = "graphs", allow_edgeless: bool = False) -> list[Data]:
    """Validate a graph set: a non-empty sequence of PyG ``Data`` with nodes (and edges).

    Node features, where graphs carry them, must have one width across the set.
    """
    if isinstance(graphs, Data) or not isinstance(graphs, Sequence):
        raise TypeError(
            f"{name} must be a non-empty sequence of torch_geometric.data.Data, "
            f"got {type(graphs).__name__}"
        )
    if len(graphs) == 0:
        raise ValueError(f"{name} is empty: at least one graph is needed")
    widths: set[int] = set()
    for i, g in enumerate(graphs):
        if not isinstance(g, Data):
            raise TypeError(
                f"{name}[{i}] must be torch_geometric.data.Data, got {type(g).__name__}"
            )
        if g.edge_index is None or g.num_nodes is None or g.num_nodes < 1:
            raise ValueError(f"{name}[{i}] has no nodes or no edge_index")
        if not allow_edgeless and g.edge_index.numel() == 0:
            raise ValueError(
                f"{name}[{i}] has no edges; graphon estimation sorts nodes by normalised degree, "
                "which is undefined for a graph without edges (drop such graphs first)"
            )
        if g.x is not None:
            widths.add(int(g.x.shape[-1]) if g.x.dim() > 1 else 1)
    if len(widths) > 1:
        raise ValueError(
            f"{name}: node features have mismatched widths {sorted(widths)}; "
            "all graphs of a set must have the same x.shape[1]"
        )
    return list(graphs)


def graph_adjacency(data: Data) -> np.ndarray:
    """Dense float64 adjacency of a PyG graph (duplicate edges count once)."""
    n = int(data.num_nodes)
    adj = np.zeros((n, n), dtype=np.float64)
    ei = data.edge_index.cpu().numpy()
    adj[ei[0], ei[1]] = 1.0
    return adj


def align_graphs(adjs: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Sum of the degree-sorted, zero-padded adjacency matrices and the largest graph size.

    The degree of node i is ``(row sum + column sum) / 2`` and nodes are sorted by it in
    descending order (``caoyxuan/W2PGNN:utils/learner.py:align_graphs``). Ties are broken by a
    stable ascending sort then reversed; numpy's default quicksort the reference uses is not
    specified on ties.
    """
    n_max = max(a.shape[0] for a in adjs)
    total = np.zeros((n_max, n_max), dtype=np.float64)
    for a in adjs:
        deg = 0.5 * a.sum(axis=0) + 0.5 * a.sum(axis=1)
        idx = np.argsort(deg, kind="stable")[::-1]
        n = a.shape[0]
        total[:n, :n] += a[np.ix_(idx, idx)]
    return total, n_max


def resize_graphon(step: torch.Tensor | np.ndarray, resolution: int) -> torch.Tensor:
    """Bilinear resize to ``resolution x resolution`` (half-pixel centres, as cv2 INTER_LINEAR)."""
    resolution = _check_resolution(resolution)
    t = torch.as_tensor(np.asarray(step), dtype=torch.float64)[None, None]
    return F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False)[
        0, 0
    ]


def _sas(mean: np.ndarray, h: int, tv_weight: float | None) -> np.ndarray:
    # Chan & Airoldi 2014 sorting-and-smoothing: h x h block averages (conv2d, stride h, no
    # padding) then total-variation denoising with weight h (caoyxuan/W2PGNN:utils/learner.py:
    # sorted_smooth).
    from skimage.restoration import denoise_tv_chambolle

    k = mean.shape[0] // h
    blocks = mean[: k * h, : k * h].reshape(k, h, k, h).mean(axis=(1, 3))
    weight = float(h) if tv_weight is None else float(tv_weight)
    if weight == 0:
        return blocks
    return np.asarray(denoise_tv_chambolle(blocks, weight=weight), dtype=np.float64)


def _largest_gap(mean: np.ndarray, k: int) -> np.ndarray:
    # Channarond et al. 2012 (caoyxuan/W2PGNN:utils/learner.py:largest_gap): split the nodes,
    # in the aligned order, at the k-1 largest increases of the normalised degree, then
    # average within blocks. The reference does not re-sort by the averaged degree; nor do we.
    n = mean.shape[0]
    if k <= 1 or n < 2:
        return np.full((n, n), mean.mean())
    degree = mean.sum(axis=1) / (n - 1)
    diff = torch.from_numpy(degree[1:] - degree[:-1])
    cut = np.sort(torch.topk(diff, k=min(k - 1, n - 1)).indices.numpy() + 1)
    labels = np.searchsorted(cut, np.arange(n), side="right")
    nb = len(cut) + 1
    onehot = np.eye(nb)[labels]  # (n, nb)
    sums = onehot.T @ mean @ onehot
    counts = onehot.sum(axis=0)
    prob = sums / np.maximum(np.outer(counts, counts), 1)
    return prob[np.ix_(labels, labels)]


def _usvt(mean: np.ndarray, threshold: float) -> np.ndarray:
    # Chatterjee 2015 (caoyxuan/W2PGNN:utils/learner.py:universal_svd).
    n = mean.shape[0]
    u, s, vt = np.linalg.svd(mean)
    s = np.where(s < threshold * math.sqrt(n), 0.0, s)
    return np.clip((u * s) @ vt, 0.0, 1.0)


def _matrix_completion(mean: np.ndarray) -> np.ndarray:
    # Keshavan et al. 2010 (caoyxuan/W2PGNN:utils/learner.py:matrix_completion): rank
    # n / int(log n) truncated SVD of 2 (A - 1/2).
    n = mean.shape[0]
    rank = max(1, n // max(1, int(np.log(n)))) if n > 1 else 1
    u, s, vt = np.linalg.svd(2.0 * (mean - 0.5))
    approx = (u[:, :rank] * s[:rank]) @ vt[:rank] + 1.0
    return np.clip(approx / 2.0, 0.0, 1.0)


def _sba(aligned: np.ndarray, threshold: float, seed: int) -> np.ndarray:
    # Airoldi, Costa & Chan 2013, stochastic blockmodel approximation, as
    # caoyxuan/W2PGNN:utils/learner.py:estimate_blocks_directed writes it: the graphs are split
    # in two halves; nodes are visited in random order and join the block of the nearest
    # pivot when the estimated distance d_hat is below `threshold`, else become a new pivot.
    # d_hat(i, b) = sqrt(0.5 (|t1 + t2 - t3 - t4| + |t5 + t6 - t7 - t8|) / (n - 2)), the
    # terms being w * sum over the other nodes s of products of the two halves' row (t1-t4)
    # and column (t5-t8) sums, w = 1 / ((g/2 + 1) (n - g/2)) (the reference's weight,
    # negative when n < g/2, which the absolute values absorb). Vectorised over pivots.
    g, n = aligned.shape[0], aligned.shape[1]
    half = g // 2
    if (half + 1) * (n - half) == 0:
        raise ValueError(
            f"method='sba' is undefined for {g} graphs of at most {n} nodes: the reference's "
            "weight 1 / ((g // 2 + 1) (n_max - g // 2)) divides by zero; use another number "
            "of graphs or another method"
        )
    w = 1.0 / ((half + 1) * (n - half))
    if g > 1:
        total = aligned.sum(axis=0)
        h1 = aligned[:half].sum(axis=0) if half > 1 else aligned[0]
        h2 = aligned[half:].sum(axis=0) if g - half > 1 else aligned[-1]
    else:
        total = h1 = h2 = aligned[0]
    rng = np.random.default_rng(seed)
    order = [int(x) for x in rng.permutation(np.arange(1, n))] if n > 1 else []
    pivots = [0]
    labels = np.zeros(n, dtype=np.int64)
    for i in order:
        piv = np.asarray(pivots)
        mask = np.ones((len(piv), n))
        mask[:, i] = 0.0
        mask[np.arange(len(piv)), piv] = 0.0
        row = (
            (h1[i] * h2[i])[None]
            + h1[piv] * h2[piv]
            - h1[i][None] * h2[piv]
            - h1[piv] * h2[i][None]
        )
        col = (
            (h1[:, i] * h2[:, i])[None]
            + (h1[:, piv] * h2[:, piv]).T
            - (h1[:, i][:, None] * h2[:, piv]).T
            - (h1[:, piv] * h2[:, i][:, None]).T
        )
        t_row = np.abs(w * (mask * row).sum(axis=1))
        t_col = np.abs(w * (mask * col).sum(axis=1))
        dhat = np.sqrt(0.5 * (t_row + t_col) / max(n - 2, 1))
        j = int(np.argmin(dhat))
        if dhat[j] < threshold:
            labels[i] = labels[pivots[j]]
        else:
            labels[i] = len(pivots)
            pivots.append(i)
    nb = len(pivots)
    onehot = np.eye(nb)[labels]
    counts = onehot.sum(axis=0)
    prob = (onehot.T @ total @ onehot) / (g * np.outer(counts, counts))
    return prob[np.ix_(labels, labels)]


@dataclass(frozen=True)
class BarycenterConfig:
    """Settings of the GW-barycenter estimators (``gwb``, ``sgwb``, ``fgwb``, ``sfgwb``).

    W2PGNN's ``utils/learner.py`` reads them from ``args`` without defining them; the
    defaults are those of the code it comes from, ``HongtengXu/SGWB-Graphon:
    run_comparison_synthetic.py``: ``alpha`` (smoothness weight, sgwb/sfgwb) 3e-4, ``beta``
    (proximal weight of the inner OT) 5e-3, ``gamma`` (GW share of the fused cost,
    fgwb/sfgwb; gwb/sgwb use 1) 0.1, ``inner_iters`` 50, ``outer_iters`` 20.
    """

    alpha: float = 3e-4
    beta: float = 5e-3
    gamma: float = 0.1
    inner_iters: int = 50
    outer_iters: int = 20

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"BarycenterConfig.{name} must be a number > 0, got {v!r}")
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, int | float) or not 0 <= g <= 1:
            raise ValueError(f"BarycenterConfig.gamma must be in [0, 1], got {g!r}")
        for name in ("inner_iters", "outer_iters"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"BarycenterConfig.{name} must be an int >= 1, got {v!r}")


def _degree_sorted(adjs: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    # learner.py:align_graphs(padding=False): each graph sorted by descending degree, with
    # its normalised degrees as the node distribution (n_i, 1).
    graphs, probs = [], []
    for a in adjs:
        deg = 0.5 * a.sum(axis=0) + 0.5 * a.sum(axis=1)
        deg = deg / deg.sum()
        idx = np.argsort(deg, kind="stable")[::-1]
        graphs.append(a[np.ix_(idx, idx)])
        probs.append(deg[idx].reshape(-1, 1))
    return graphs, probs


def _target_distribution(probs: Sequence[np.ndarray], dim: int) -> np.ndarray:
    # learner.py:estimate_target_distribution: each sorted distribution interpolated onto
    # `dim` points, plus 1e-3, summed and normalised.
    p_t = np.zeros((dim, 1))
    x_t = np.linspace(0, 1, dim)
    for p in probs:
        p_s = np.sort(p[:, 0])[::-1]
        p_t[:, 0] += np.interp(x_t, np.linspace(0, 1, p_s.shape[0]), p_s) + 1e-3
    return p_t / p_t.sum()


def _proximal_ot(
    cost: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    iters: int,
    beta: float,
    prior: np.ndarray | None = None,
    error_bound: float = 1e-10,
) -> np.ndarray:
    # learner.py:proximal_ot: min <cost, T> + beta KL(T | prior) by Sinkhorn scaling.
    kernel = np.exp(-cost / beta)
    if prior is not None:
        kernel = kernel * prior
    a = np.ones(p1.shape) / p1.shape[0]
    b = np.ones(p2.shape) / p2.shape[0]
    err, i = np.inf, 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        while err > error_bound and i < iters:
            b = p2 / (kernel.T @ a)
            a_new = p1 / (kernel @ b)
            err = np.abs(a_new - a).sum() / np.abs(a).sum()
            a = a_new
            i += 1
        return (a @ b.T) * kernel


def _gw_cost(cs: np.ndarray, ct: np.ndarray, t: np.ndarray, ps: np.ndarray, pt: np.ndarray):
    # learner.py:gw_cost / node_cost_st: (C_s^2 p_s) 1' + 1 (C_t^2 p_t)' - 2 C_s T C_t'.
    return ((cs**2) @ ps) + ((ct**2) @ pt).T - 2 * (cs @ t @ ct.T)


def _gw_barycenter(adjs: Sequence[np.ndarray], method: str, cfg: BarycenterConfig) -> np.ndarray:
    # learner.py:fgw_barycenter (gwb: gamma = 1; fgwb: gamma = cfg.gamma) and
    # smoothed_fgw_barycenter (sgwb: gamma = 1; sfgwb), Xu et al. AAAI 2021: nb = n_max // h
    # barycenter nodes with the averaged degree distribution p_b; transports initialised by
    # proximal OT on the degree-distribution cost, then `outer_iters` rounds of (barycenter
    # from the transported graphs, transports by proximal OT on the fused GW cost).
    graphs, probs = _degree_sorted(adjs)
    n_max = max(a.shape[0] for a in adjs)
    h = int(np.log2(n_max) + 1)
    nb = int(n_max / h)
    smooth = method in ("sgwb", "sfgwb")
    if nb < (3 if smooth else 1):
        raise ValueError(
            f"method={method!r} needs n_max // (log2(n_max) + 1) >= {3 if smooth else 1} "
            f"barycenter nodes; the largest graph has {n_max} nodes"
        )
    gamma = 1.0 if method in ("gwb", "sgwb") else float(cfg.gamma)
    p_b = _target_distribution(probs, nb)
    ws = np.full(len(graphs), 1.0 / len(graphs))
    if smooth:
        # Second differences D (nb - 2, nb); barycenter = L2 A L2' + P2 A P2' with
        # L2 = U diag(s / (s^2 + p_b^2)) U' from the SVD of alpha D'D, P2 = diag(p_b / (...)).
        d = np.zeros((nb - 2, nb))
        rows = np.arange(nb - 2)
        d[rows, rows], d[rows, rows + 1], d[rows, rows + 2] = -1.0, 2.0, -1.0
        us, ss, _ = np.linalg.svd(cfg.alpha * (d.T @ d))
        denom = ss**2 + p_b[:, 0] ** 2
        l2 = us @ np.diag(ss / denom) @ us.T
        p2 = np.diag(p_b[:, 0] / denom)
    cost_ps, trans, priors = [], [], []
    for p in probs:
        cost_p = p_b**2 + (p**2).T - 2 * (p_b @ p.T)
        cost_p = cost_p / np.max(cost_p)
        cost_ps.append(cost_p)
        t = _proximal_ot(cost_p, p_b, p, cfg.inner_iters, cfg.beta)
        trans.append(t)
        priors.append(t + 1e-16)
    bary = np.zeros((nb, nb))
    for _ in range(cfg.outer_iters):
        avg = sum(w * (t @ g @ t.T) for w, g, t in zip(ws, graphs, trans, strict=True))
        bary = l2 @ avg @ l2.T + p2 @ avg @ p2.T if smooth else avg / (p_b @ p_b.T)
        for i, (g, p) in enumerate(zip(graphs, probs, strict=True)):
            cost = gamma * _gw_cost(bary, g, trans[i], p_b, p) + (1 - gamma) * cost_ps[i]
            cost = cost / np.max(cost)
            trans[i] = _proximal_ot(cost, p_b, p, cfg.inner_iters, cfg.beta, prior=priors[i])
    if not np.isfinite(bary).all() or not all(np.isfinite(t).all() for t in trans):
        raise FloatingPointError(
            f"method={method!r}: the proximal OT overflowed (exp(-cost / beta) with "
            f"beta={cfg.beta}); the reference would return NaN. Raise BarycenterConfig.beta"
        )
    return np.clip(bary, 0.0, 1.0)


def estimate_graphon(
    graphs: Sequence[Data],
    method: str = "sas",
    resolution: int = 100,
    usvt_threshold: float = 2.02,
    tv_weight: float | None = None,
    sba_threshold: float = 0.1,
    seed: int = 0,
    barycenter: BarycenterConfig | None = None,
) -> Graphon:
    """Estimate one graphon from a set of PyG graphs.

    Args:
        graphs: the graph set (``Data`` with ``edge_index``; every graph needs an edge).
        method: ``"sas"`` (sorting-and-smoothing, the reference's default path), ``"lg"``
            (largest gap), ``"usvt"`` (universal singular value thresholding), ``"mc"``
            (matrix completion), ``"sba"`` (stochastic blockmodel approximation) or a
            GW barycenter: ``"gwb"``, ``"sgwb"`` (smoothed), ``"fgwb"`` (fused with the degree
            cost), ``"sfgwb"`` (both).
        resolution: side of the discretised graphon (the reference resizes to 1000; we
            default to 100, see the README's measured score stability).
        usvt_threshold: USVT's singular value threshold factor (``learner.py`` default 2.02).
        tv_weight: SAS's total-variation weight; ``None`` is the reference's ``h`` (the
            block size), which flattens low-contrast structure (see the README); 0 skips
            the denoising.
        sba_threshold: SBA's distance threshold for joining a block
            (``HongtengXu/SGWB-Graphon:run_comparison_synthetic.py`` ``--threshold-sba``
            0.1; W2PGNN reads ``args.threshold_sba`` without defining it).
        seed: SBA's node visiting order (the reference draws it from numpy's global state).
        barycenter: :class:`BarycenterConfig` for the GW-barycenter methods.
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    resolution = _check_resolution(resolution)
    graphs = check_graphs(graphs)
    if tv_weight is not None and (not isinstance(tv_weight, int | float) or tv_weight < 0):
        raise ValueError(f"tv_weight must be None or a number >= 0, got {tv_weight!r}")
    if isinstance(sba_threshold, bool) or not isinstance(sba_threshold, int | float):
        raise TypeError(f"sba_threshold must be a number > 0, got {sba_threshold!r}")
    if not (math.isfinite(sba_threshold) and sba_threshold > 0):
        raise ValueError(f"sba_threshold must be a finite number > 0, got {sba_threshold!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if barycenter is not None and not isinstance(barycenter, BarycenterConfig):
        raise TypeError(f"barycenter must be a BarycenterConfig, got {type(barycenter).__name__}")
    adjs = [graph_adjacency(g) for g in graphs]
    return estimate_graphon_from_adjacency(
        adjs, method, resolution, usvt_threshold, tv_weight, sba_threshold, int(seed), barycenter
    )


def estimate_graphon_from_adjacency(
    adjs: Sequence[np.ndarray],
    method: str = "sas",
    resolution: int = 100,
    usvt_threshold: float = 2.02,
    tv_weight: float | None = None,
    sba_threshold: float = 0.1,
    seed: int = 0,
    barycenter: BarycenterConfig | None = None,
) -> Graphon:
    """:func:`estimate_graphon` on dense adjacency matrices (no validation of the graphs)."""
    method = method.lower()
    if method in ("gwb", "sgwb", "fgwb", "sfgwb"):
        step = _gw_barycenter(adjs, method, barycenter or BarycenterConfig())
        step_t = torch.from_numpy(np.ascontiguousarray(step))
        n_max = max(a.shape[0] for a in adjs)
        return Graphon(resize_graphon(step_t, resolution), step_t, method, len(adjs), n_max)
    if method == "sba":
        # SBA needs the aligned graphs one by one (two halves), not only their sum.
        n_max = max(a.shape[0] for a in adjs)
        aligned = np.zeros((len(adjs), n_max, n_max))
        for i, a in enumerate(adjs):
            deg = 0.5 * a.sum(axis=0) + 0.5 * a.sum(axis=1)
            idx = np.argsort(deg, kind="stable")[::-1]
            aligned[i, : a.shape[0], : a.shape[0]] = a[np.ix_(idx, idx)]
        step_t = torch.from_numpy(np.ascontiguousarray(_sba(aligned, sba_threshold, seed)))
        return Graphon(resize_graphon(step_t, resolution), step_t, method, len(adjs), n_max)
    total, n_max = align_graphs(adjs)
    mean = total / len(adjs)
    # learner.py:estimate_graphon: block size h = int(log2(n_max) + 1), k = int(n_max / h).
    h = int(np.log2(n_max) + 1)
    k = max(1, n_max // h)
    if method == "sas":
        step = _sas(mean, h, tv_weight) if n_max >= h else np.full((1, 1), mean.mean())
    elif method == "lg":
        step = _largest_gap(mean, k)
    elif method == "usvt":
        step = _usvt(mean, usvt_threshold)
    else:
        step = _matrix_completion(mean)
    step_t = torch.from_numpy(np.ascontiguousarray(step, dtype=np.float64))
    return Graphon(resize_graphon(step_t, resolution), step_t, method, len(adjs), n_max)


def synthetic_graphon(kind: int | str, resolution: int = 100) -> torch.Tensor:
    """Synthetic graphons of ``caoyxuan/W2PGNN:utils/simulator.py:synthesize_graphon``.

    ``kind`` is the reference's ``type_idx`` 0-12 (0: u*v on reversed axes, 9: |u-v|,
    10: 1-|u-v|, 11: two 0.8-blocks on the diagonal, 12: 0.8 off-diagonal blocks, ...).
    """
    r = _check_resolution(resolution)
    if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind <= 12:
        raise ValueError(f"kind must be an int in 0..12 (simulator.py type_idx), got {kind!r}")
    u = ((np.arange(r) + 1) / r).reshape(-1, 1)
    v = u.reshape(1, -1)
    ur, vr = u[::-1], v[:, ::-1]
    if kind == 0:
        w = ur @ vr
    elif kind == 1:
        w = np.exp(-(u**0.7 + v**0.7))
    elif kind == 2:
        w = 0.25 * (ur**2 + vr**2 + ur**0.5 + vr**0.5)
    elif kind == 3:
        w = 0.5 * (ur + vr)
    elif kind == 4:
        w = 1 / (1 + np.exp(-2 * (ur**2 + vr**2)))
    elif kind == 5:
        w = 1 / (1 + np.exp(-(np.maximum(ur, vr) ** 2 + np.minimum(ur, vr) ** 4)))
    elif kind == 6:
        w = np.exp(-(np.maximum(u, v) ** 0.75))
    elif kind == 7:
        w = np.exp(-0.5 * (np.minimum(u, v) + u**0.5 + v**0.5))
    elif kind == 8:
        w = np.log(1 + 0.5 * np.maximum(ur, vr))
    elif kind == 9:
        w = np.abs(u - v)
    elif kind == 10:
        w = 1 - np.abs(u - v)
    elif kind == 11:
        r2 = r // 2
        w = np.zeros((r, r))
        w[:r2, :r2] = 0.8
        w[r2:, r2:] = 0.8
    else:
        r2 = r // 2
        w = np.full((r, r), 0.8)
        w[:r2, :r2] = 0.0
        w[r2:, r2:] = 0.0
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))


def sample_graphs(
    graphon: torch.Tensor | np.ndarray,
    num_graphs: int,
    num_nodes: int | tuple[int, int],
    generator: torch.Generator | None = None,
) -> list[Data]:
    """Sample undirected graphs from a discretised graphon
    (``caoyxuan/W2PGNN:utils/simulator.py:simulate_graphs``: uniform latent positions,
    ``A_ij = 1[U_ij < W(u_i, u_j)]``; we draw one coin per unordered pair so graphs are
    undirected without self-loops). ``num_nodes`` is a size or an inclusive ``(low, high)``.
    """
    w = torch.as_tensor(np.asarray(graphon), dtype=torch.float64)
    if w.dim() != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 1:
        raise ValueError(f"graphon must be a square 2-D array, got shape {tuple(w.shape)}")
    if not isinstance(num_graphs, int) or num_graphs < 1:
        raise ValueError(f"num_graphs must be a positive int, got {num_graphs!r}")
    lo, hi = (num_nodes, num_nodes) if isinstance(num_nodes, int) else num_nodes
    if not (isinstance(lo, int) and isinstance(hi, int)) or lo < 2 or hi < lo:
        raise ValueError(f"num_nodes must be an int >= 2 or a (low, high) pair, got {num_nodes!r}")
    r = w.shape[0]
    out = []
    for _ in range(num_graphs):
        n = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        loc = (torch.rand(n, generator=generator, dtype=torch.float64) * r).long().clamp_max(r - 1)
        p = w[loc][:, loc]
        coin = torch.rand(n, n, generator=generator, dtype=torch.float64)
        upper = torch.triu(coin < p, diagonal=1)
        a = upper | upper.T
        out.append(Data(edge_index=a.nonzero().T.contiguous(), num_nodes=n))
    return out
