"""Every public function rejects bad input with a clear error."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data

from trainforge_w2pgnn import (
    EgoNetworks,
    FeasibilityConfig,
    GraphonBasis,
    entropic_gw,
    estimate_graphon,
    feasibility,
    fit_mixture,
    gw_distance,
    resize_graphon,
    sample_graphs,
    synthetic_graphon,
    topo_features,
)


def _tri(x=None):
    return Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3, x=x)


def test_estimate_graphon_bad_input():
    with pytest.raises(ValueError, match="empty"):
        estimate_graphon([])
    with pytest.raises(TypeError, match="sequence"):
        estimate_graphon(_tri())
    with pytest.raises(ValueError, match="no edges"):
        estimate_graphon(
            [_tri(), Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=4)]
        )
    with pytest.raises(ValueError, match=">= 2"):
        estimate_graphon([_tri()], resolution=1)
    with pytest.raises(TypeError, match="int"):
        estimate_graphon([_tri()], resolution=2.5)
    with pytest.raises(ValueError, match="method"):
        estimate_graphon([_tri()], method="cv2")
    with pytest.raises(ValueError, match="mismatched widths"):
        estimate_graphon([_tri(torch.zeros(3, 4)), _tri(torch.zeros(3, 5))])
    with pytest.raises(ValueError, match="tv_weight"):
        estimate_graphon([_tri()], tv_weight=-1.0)


def test_resize_and_synthetic_and_sample_bad_input():
    with pytest.raises(ValueError, match=">= 2"):
        resize_graphon(torch.ones(3, 3), 0)
    with pytest.raises(ValueError, match="kind"):
        synthetic_graphon(13)
    with pytest.raises(ValueError, match="square"):
        sample_graphs(torch.ones(3, 4), 2, 5)
    with pytest.raises(ValueError, match="num_nodes"):
        sample_graphs(torch.ones(3, 3), 2, 1)
    with pytest.raises(ValueError, match="num_graphs"):
        sample_graphs(torch.ones(3, 3), 0, 5)


def test_gw_bad_input():
    with pytest.raises(ValueError, match="square"):
        gw_distance(torch.ones(3, 4), torch.ones(3, 3))
    with pytest.raises(ValueError, match="loss"):
        gw_distance(torch.ones(3, 3), torch.ones(3, 3), loss="l1")
    with pytest.raises(ValueError, match="non-finite"):
        gw_distance(torch.full((3, 3), float("nan")), torch.ones(3, 3))
    with pytest.raises(TypeError, match="w1"):
        gw_distance([[1.0]], torch.ones(3, 3))
    with pytest.raises(TypeError, match="c1"):
        entropic_gw([[1.0]], torch.ones(2, 2))
    with pytest.raises(ValueError, match="epsilon"):
        entropic_gw(torch.ones(2, 2), torch.ones(2, 2), epsilon=0.0)


def test_basis_and_feasibility_bad_input(gen):
    graphs = sample_graphs(torch.full((2, 2), 0.4), 6, 10, gen)
    with pytest.raises(ValueError, match="empty"):
        GraphonBasis.fit({})
    with pytest.raises(ValueError, match="empty"):
        GraphonBasis.fit({"a": []})
    with pytest.raises(ValueError, match="split"):
        GraphonBasis.fit({"a": graphs}, split="random")
    with pytest.raises(ValueError, match="at least 2"):
        GraphonBasis.fit({"a": graphs}, split="domain")
    with pytest.raises(ValueError, match="n_clusters"):
        GraphonBasis.fit({"a": graphs}, split="topo", n_clusters=10)
    with pytest.raises(TypeError, match="list of graph lists"):
        GraphonBasis.fit(graphs)
    with pytest.raises(ValueError, match=">= 2"):
        GraphonBasis.fit({"a": graphs}, resolution=1)
    basis = GraphonBasis.fit({"a": graphs}, resolution=8)
    with pytest.raises(TypeError, match="GraphonBasis"):
        feasibility("basis", graphs)
    with pytest.raises(ValueError, match="empty"):
        feasibility(basis, [])
    with pytest.raises(ValueError, match="square"):
        feasibility(basis, torch.ones(3, 4))
    with pytest.raises(ValueError, match="state_dict"):
        GraphonBasis.from_state_dict({"split": "domain"})


def test_fit_mixture_and_config_bad_input():
    with pytest.raises(ValueError, match="basis"):
        fit_mixture(torch.ones(4, 4), torch.ones(4, 4))
    with pytest.raises(ValueError, match="match"):
        fit_mixture(torch.ones(2, 4, 4), torch.ones(5, 5))
    with pytest.raises(ValueError, match="lr"):
        FeasibilityConfig(lr=0.0)
    with pytest.raises(ValueError, match="epochs"):
        FeasibilityConfig(epochs=0)
    with pytest.raises(ValueError, match="final_loss"):
        FeasibilityConfig(final_loss="l2")


def test_ego_and_topo_bad_input():
    with pytest.raises(ValueError, match="num_hops"):
        EgoNetworks(num_hops=0)
    with pytest.raises(ValueError, match="sample_ratio"):
        EgoNetworks(sample_ratio=0.0)
    with pytest.raises(ValueError, match="max_nodes"):
        EgoNetworks(max_nodes=0)
    with pytest.raises(ValueError, match="num_centers"):
        EgoNetworks(num_centers=0)
    with pytest.raises(TypeError, match="Data"):
        EgoNetworks()(torch.zeros(3))
    with pytest.raises(TypeError, match="Data"):
        topo_features(torch.zeros(3))
    with pytest.raises(ValueError, match="no edges"):
        topo_features(Data(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=3))


def test_entropic_settings_and_vjp_bad_input():
    from trainforge_w2pgnn.gw import EntropicSettings, entropic_gw_jvp, entropic_gw_vjp

    with pytest.raises(ValueError, match="epsilon"):
        EntropicSettings(epsilon=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        EntropicSettings(max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        EntropicSettings(tol=-1.0)
    with pytest.raises(TypeError, match="unknown entropic GW setting"):
        entropic_gw(torch.ones(2, 2), torch.ones(2, 2), eps=1e-3)
    with pytest.raises(TypeError, match="EntropicSettings"):
        entropic_gw(torch.ones(2, 2), torch.ones(2, 2), {"epsilon": 1e-3})
    with pytest.raises(ValueError, match="square"):
        entropic_gw_vjp(torch.ones(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match="fixed_point_rtol"):
        entropic_gw_vjp(torch.ones(2, 2), torch.ones(2, 2), fixed_point_rtol=-1.0)
    with pytest.raises(ValueError, match="directions"):
        entropic_gw_jvp(torch.ones(2, 2), torch.ones(2, 2), torch.ones(3, 3))
    with pytest.raises(ValueError, match="fixed_point_rtol"):
        FeasibilityConfig(fixed_point_rtol=-1.0)
