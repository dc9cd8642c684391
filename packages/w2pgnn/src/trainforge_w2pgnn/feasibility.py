"""Graphon bases and the pre-training feasibility score (W2PGNN, Sec. 4.2-4.3).

A :class:`GraphonBasis` holds the graphons fitted on the pre-training data under one split
(``integrated``: one graphon of all graphs; ``domain``: one per source; ``topo``: one per
KMeans cluster of the 8 topological statistics). The generator space is every convex
combination of the basis; :func:`feasibility` fits the mixture weights to the downstream
graphon and scores ``zeta = -GW(best mixture, downstream graphon)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch_geometric.data import Data

from trainforge_w2pgnn.graphon import (
    METHODS,
    Graphon,
    _check_resolution,
    check_graphs,
    estimate_graphon,
)
from trainforge_w2pgnn.gw import (
    GW_LOSSES,
    EntropicSettings,
    _entropic_plan,
    entropic_gw_vjp,
    gw_distance,
)
from trainforge_w2pgnn.topo import topo_features

__all__ = [
    "SPLITS",
    "FeasibilityConfig",
    "FeasibilityResult",
    "GraphonBasis",
    "feasibility",
    "fit_mixture",
]

logger = logging.getLogger(__name__)

_SOLVER = EntropicSettings()  # the reference's solver settings, held in gw.py

SPLITS = ("integrated", "domain", "topo")
"""How a graphon basis is built from the pre-training graphs (the paper's three splits)."""


@dataclass(frozen=True)
class FeasibilityConfig:
    """Mixture fit and scoring settings; defaults from the reference.

    ``lr``, ``betas``, ``weight_decay``, ``epochs``: Adam on the softmax logits
    (``caoyxuan/W2PGNN:graph_classification/estimate_feasibility.py`` argparse defaults 0.05,
    (0.9, 0.99), 1e-5, 100). ``patience=3`` after iteration ``warmup=30`` with the trigger
    count reset every ``reset_every=20`` iterations (``cal_distance.py:alpha_fit``).
    ``epsilon``, ``gw_max_iter``, ``sinkhorn_threshold``, ``sinkhorn_max_iter``: the entropic
    GW loss (``utils/other_gw.py``). ``final_loss``: the exact GW of the best mixture
    (``utils/simulator.py:gw_distance`` uses ``"kl_loss"``). ``unrolled=True`` takes the
    reference's gradient, through the whole unrolled entropic solver (computed in reverse
    mode, :func:`~trainforge_w2pgnn.gw.entropic_gw_vjp`; equal to autograd's to 1e-10),
    skipping the iterations at the solver's fixed point (``fixed_point_rtol``; ``0`` runs
    them all);
    ``False`` uses the envelope gradient (transport plan held fixed), which is not the
    same gradient with the reference's unconverged solver, so the fitted weights and scores
    move in the 3rd-4th decimal.
    """

    lr: float = 0.05
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-5
    epochs: int = 100
    patience: int = 3
    warmup: int = 30
    reset_every: int = 20
    epsilon: float = _SOLVER.epsilon
    gw_max_iter: int = _SOLVER.max_iter
    sinkhorn_threshold: float = _SOLVER.sinkhorn_threshold
    sinkhorn_max_iter: int = _SOLVER.sinkhorn_max_iter
    final_loss: str = "kl_loss"
    unrolled: bool = True
    fixed_point_rtol: float = 1e-9

    @property
    def solver(self) -> EntropicSettings:
        """The entropic GW settings of the fit (``tol`` is the reference's)."""
        return EntropicSettings(
            epsilon=self.epsilon,
            max_iter=self.gw_max_iter,
            tol=_SOLVER.tol,
            sinkhorn_threshold=self.sinkhorn_threshold,
            sinkhorn_max_iter=self.sinkhorn_max_iter,
        )

    def __post_init__(self) -> None:
        for name in ("lr", "epsilon", "sinkhorn_threshold"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not v > 0:
                raise ValueError(f"FeasibilityConfig.{name} must be > 0, got {v!r}")
        for name in (
            "epochs",
            "patience",
            "gw_max_iter",
            "sinkhorn_max_iter",
            "reset_every",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FeasibilityConfig.{name} must be an int >= 1, got {v!r}")
        v = self.fixed_point_rtol
        if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
            raise ValueError(f"FeasibilityConfig.fixed_point_rtol must be >= 0, got {v!r}")
        if self.final_loss not in GW_LOSSES:
            raise ValueError(
                f"FeasibilityConfig.final_loss must be one of {GW_LOSSES}, got {self.final_loss!r}"
            )


@dataclass(frozen=True)
class FeasibilityResult:
    """``score = -distance``; ``alpha`` are the mixture weights of the best mixture."""

    score: float
    alpha: torch.Tensor
    distance: float
    split: str
    losses: list[float] = field(default_factory=list, repr=False)


@dataclass
class GraphonBasis:
    """Graphons fitted on pre-training data under one split."""

    graphons: list[Graphon]
    split: str
    labels: list[str]
    tv_weight: float | None = None

    @property
    def resolution(self) -> int:
        return self.graphons[0].resolution

    def state_dict(self) -> dict:
        """Tensors and metadata to ``torch.save`` (plain types: loads with weights_only)."""
        return {
            "split": self.split,
            "labels": list(self.labels),
            "tv_weight": self.tv_weight,
            "graphons": [
                {
                    "values": g.values,
                    "step_function": g.step_function,
                    "method": g.method,
                    "num_graphs": g.num_graphs,
                    "max_nodes": g.max_nodes,
                }
                for g in self.graphons
            ],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> GraphonBasis:
        """Rebuild a basis saved with :meth:`state_dict`."""
        try:
            graphons = [Graphon(**g) for g in state["graphons"]]
            return cls(graphons, state["split"], list(state["labels"]), state["tv_weight"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"state is not a GraphonBasis state_dict: {exc}") from exc

    def stack(self) -> torch.Tensor:
        """The basis as a ``(K, r, r)`` tensor."""
        return torch.stack([g.values for g in self.graphons])

    @classmethod
    def fit(
        cls,
        graph_sets: Mapping[str, Sequence[Data]] | Sequence[Sequence[Data]],
        split: str = "integrated",
        n_clusters: int = 5,
        method: str = "sas",
        resolution: int = 100,
        seed: int = 0,
        tv_weight: float | None = None,
    ) -> GraphonBasis:
        """Fit the basis of one split.

        Args:
            graph_sets: the pre-training data, one graph set per source (a mapping
                ``name -> graphs`` or a sequence of graph lists).
            split: ``"integrated"``, ``"domain"`` (needs two sources or more, as the
                reference) or ``"topo"`` (KMeans with ``n_clusters`` on :func:`topo_features`;
                reference ``n_clusters=5``).
            method: graphon estimator (:data:`METHODS`).
            resolution: graphon resolution.
            seed: KMeans seed.
            tv_weight: SAS's TV weight (``None``: the reference's block size), also used
                for the downstream graphon in :func:`feasibility`.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        resolution = _check_resolution(resolution)
        named = _named_sets(graph_sets)
        if split == "integrated":
            everything = [g for gs in named.values() for g in gs]
            check_graphs(everything, "graph_sets (all sets together)")
            g = estimate_graphon(everything, method, resolution, tv_weight=tv_weight)
            return cls([g], split, ["all"], tv_weight)
        if split == "domain":
            if len(named) < 2:
                raise ValueError(
                    f"split='domain' needs at least 2 graph sets, got {len(named)} "
                    "(the reference: 'Domain Number should be larger than 1')"
                )
            graphons = [
                estimate_graphon(gs, method, resolution, tv_weight=tv_weight)
                for gs in named.values()
            ]
            return cls(graphons, split, list(named), tv_weight)
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
            raise ValueError(f"n_clusters must be an int >= 1, got {n_clusters!r}")
        everything = check_graphs(
            [g for gs in named.values() for g in gs], "graph_sets (all sets together)"
        )
        if len(everything) < n_clusters:
            raise ValueError(
                f"split='topo' with n_clusters={n_clusters} needs at least that many graphs, "
                f"got {len(everything)}"
            )
        from sklearn.cluster import KMeans

        feats = torch.stack([topo_features(g) for g in everything]).numpy()
        # estimate_feasibility.py: KMeans(n_clusters=5) on the raw statistics (sklearn 0.20's
        # n_init=10 made explicit).
        labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(feats)
        graphons, names = [], []
        for c in range(n_clusters):
            members = [everything[i] for i in np.flatnonzero(labels == c)]
            if members:
                graphons.append(estimate_graphon(members, method, resolution, tv_weight=tv_weight))
                names.append(f"cluster{c}")
        return cls(graphons, split, names, tv_weight)


def _named_sets(
    graph_sets: Mapping[str, Sequence[Data]] | Sequence[Sequence[Data]],
) -> dict[str, list[Data]]:
    if isinstance(graph_sets, Mapping):
        items = list(graph_sets.items())
    elif isinstance(graph_sets, Sequence) and not isinstance(graph_sets, str | Data):
        if graph_sets and isinstance(graph_sets[0], Data):
            raise TypeError(
                "graph_sets must be a mapping name -> graphs or a list of graph lists; "
                "wrap a single set as [graphs]"
            )
        items = [(f"set{i}", gs) for i, gs in enumerate(graph_sets)]
    else:
        raise TypeError(
            f"graph_sets must be a mapping or a sequence of graph sets, got {type(graph_sets)}"
        )
    if not items:
        raise ValueError("graph_sets is empty: at least one graph set is needed")
    return {str(k): check_graphs(v, f"graph_sets[{k!r}]") for k, v in items}


def fit_mixture(
    basis: torch.Tensor,
    target: torch.Tensor,
    config: FeasibilityConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Fit softmax mixture weights so that ``sum_k alpha_k B_k`` is GW-close to ``target``.

    Adam on logits initialised equal (``nn.Linear(1, K)`` weight set to 1 in
    ``cal_distance.py:alpha_fit``) with the entropic GW loss. Returns the best mixture (lowest
    loss seen), its weights and the loss curve. The early stop is the reference's: after
    iteration ``warmup`` every iteration whose loss is not a new minimum counts, ``patience``
    counts stop, and the count resets every ``reset_every`` iterations.
    """
    cfg = config or FeasibilityConfig()
    if not isinstance(basis, torch.Tensor) or basis.dim() != 3 or basis.shape[1] != basis.shape[2]:
        raise ValueError("basis must be a (K, r, r) tensor")
    if not isinstance(target, torch.Tensor) or target.dim() != 2:
        raise ValueError("target must be a square 2-D tensor")
    if target.shape[0] != basis.shape[1] or target.shape[1] != basis.shape[2]:
        raise ValueError(
            f"target's shape {tuple(target.shape)} must match the basis graphons' "
            f"{tuple(basis.shape[1:])}"
        )
    basis = basis.to(torch.float64)
    target = target.to(torch.float64)
    # The solver runs thousands of small matrix ops; on a shared CPU, thread hand-offs cost
    # more than the maths (measured 30x on a loaded 2-core VM at r=20), so small problems run
    # single-threaded and the setting is restored afterwards.
    threads = torch.get_num_threads()
    if basis.shape[1] <= 256 and basis.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _fit_mixture(basis, target, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_mixture(
    basis: torch.Tensor, target: torch.Tensor, cfg: FeasibilityConfig
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    k = basis.shape[0]
    logits = torch.ones(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    best = math.inf
    best_alpha = torch.softmax(logits.detach(), 0)
    trigger = 0
    solver = cfg.solver
    for i in range(cfg.epochs):
        if i % cfg.reset_every == 0:
            trigger = 0
        opt.zero_grad()
        if cfg.unrolled:
            # The reference's gradient (through the unrolled solver), by reverse mode to the
            # mixture, then onto each basis graphon and through the softmax's Jacobian:
            # d alpha_k / d logit_l = alpha_k (delta_kl - alpha_l).
            with torch.no_grad():
                alpha = torch.softmax(logits, dim=0)
                mix = torch.einsum("k,kij->ij", alpha, basis)
                loss, dmix = entropic_gw_vjp(mix, target, solver, cfg.fixed_point_rtol)
                dloss = torch.einsum("kij,ij->k", basis, dmix)
                logits.grad = alpha * (dloss - (alpha * dloss).sum())
        else:
            alpha = torch.softmax(logits, dim=0)
            mix = torch.einsum("k,kij->ij", alpha, basis)
            loss = _envelope_gw(mix, target, solver)
            loss.backward()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"entropic GW loss is {value} at iteration {i}")
        losses.append(value)
        if value < best:
            best = value
            best_alpha = alpha.detach().clone()
        if i > cfg.warmup and value > best:
            trigger += 1
            if trigger >= cfg.patience:
                break
        opt.step()
    best_mix = torch.einsum("k,kij->ij", best_alpha, basis)
    return best_mix, best_alpha, losses


def _envelope_gw(mix: torch.Tensor, target: torch.Tensor, solver: EntropicSettings) -> torch.Tensor:
    # Plan from the entropic solver without autograd, loss re-evaluated with the plan fixed.
    with torch.no_grad():
        t = _entropic_plan(mix.detach(), target, solver)
    n, m = mix.shape[0], target.shape[0]
    p = torch.full((n,), 1.0 / n, dtype=mix.dtype)
    q = torch.full((m,), 1.0 / m, dtype=mix.dtype)
    const = ((mix**2 / 2) @ p)[:, None] + ((target**2 / 2) @ q)[None, :]
    return ((const - mix @ t @ target.T) * t).sum()


def _down_graphon(
    down: Sequence[Data] | Graphon | torch.Tensor, basis: GraphonBasis
) -> torch.Tensor:
    r = basis.resolution
    if isinstance(down, Graphon):
        return down.values if down.resolution == r else down.resize(r).values
    if isinstance(down, torch.Tensor):
        if down.dim() != 2 or down.shape[0] != down.shape[1]:
            raise ValueError(f"down_graphs as a tensor must be square, got {tuple(down.shape)}")
        from trainforge_w2pgnn.graphon import resize_graphon

        return resize_graphon(down, r) if down.shape[0] != r else down.to(torch.float64)
    method = basis.graphons[0].method
    graphs = check_graphs(down, "down_graphs")
    return estimate_graphon(graphs, method, r, tv_weight=basis.tv_weight).values


def feasibility(
    basis: GraphonBasis | Sequence[GraphonBasis],
    down_graphs: Sequence[Data] | Graphon | torch.Tensor,
    fit_alpha: bool = True,
    config: FeasibilityConfig | None = None,
) -> FeasibilityResult:
    """The pre-training feasibility ``zeta = -min_alpha GW(sum_k alpha_k B_k, B_down)``.

    Args:
        basis: one basis, or several (one per split): the best split wins, as the paper's
            final feasibility is the best over the three splits.
        down_graphs: the downstream graphs (their graphon is estimated with the basis'
            method and resolution), or a downstream graphon.
        fit_alpha: fit the weights (``alpha_fit``); ``False`` scores the plain mean of the
            basis (``mean_fit``). A one-graphon basis is scored directly.
        config: :class:`FeasibilityConfig`.
    """
    cfg = config or FeasibilityConfig()
    if isinstance(basis, GraphonBasis):
        bases = [basis]
    elif isinstance(basis, Sequence) and basis and all(isinstance(b, GraphonBasis) for b in basis):
        bases = list(basis)
    else:
        raise TypeError(f"basis must be a GraphonBasis or a non-empty list of them, got {basis!r}")
    results = []
    for b in bases:
        target = _down_graphon(down_graphs, b)
        stack = b.stack()
        if len(b.graphons) == 1 or not fit_alpha:
            mix = stack.mean(0)
            alpha = torch.full((stack.shape[0],), 1.0 / stack.shape[0], dtype=torch.float64)
            losses: list[float] = []
        else:
            mix, alpha, losses = fit_mixture(stack, target, cfg)
        d = gw_distance(mix, target, loss=cfg.final_loss)
        logger.info("feasibility split=%s distance=%.6f alpha=%s", b.split, d, alpha.tolist())
        results.append(FeasibilityResult(-d, alpha, d, b.split, losses))
    return max(results, key=lambda r: r.score)
