"""User-item graphs as PyG edge indices, unlearning requests and offline data.

Conventions used throughout the package:

* a *pair tensor* is a ``LongTensor`` of shape ``(2, E)`` holding ``(user, item)`` rows with
  item ids local to the item set (``0 <= item < num_items``);
* the *homogeneous* ``edge_index`` used for propagation has ``N = num_users + num_items``
  nodes (items shifted by ``num_users``) and both directions of every interaction, as the
  reference's bipartite adjacency ``[[0, R], [R^T, 0]]``
  (Shuvayu12/UnlearnRec2:data_handler.py ``_make_torch_adj``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.transforms import BaseTransform

log = logging.getLogger(__name__)

EDGE_TYPE = ("user", "rates", "item")


def check_pairs(pairs: object, num_users: int, num_items: int, name: str = "pairs") -> Tensor:
    """Validate a ``(2, E)`` pair tensor of (user, item) ids and return it as int64."""
    if not isinstance(pairs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (2, E), got {type(pairs)!r}")
    if pairs.dim() != 2 or pairs.size(0) != 2:
        raise ValueError(f"{name} must have shape (2, E), got {tuple(pairs.shape)}")
    if pairs.dtype.is_floating_point or pairs.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer ids, got dtype {pairs.dtype}")
    pairs = pairs.long()
    if pairs.numel():
        users, items = pairs
        if int(users.min()) < 0 or int(users.max()) >= num_users:
            raise ValueError(
                f"{name} has user ids in [{int(users.min())}, {int(users.max())}]; "
                f"allowed is [0, {num_users - 1}] (num_users={num_users})"
            )
        if int(items.min()) < 0 or int(items.max()) >= num_items:
            raise ValueError(
                f"{name} has item ids in [{int(items.min())}, {int(items.max())}]; "
                f"allowed is [0, {num_items - 1}] (num_items={num_items})"
            )
    return pairs


def _check_counts(num_users: object, num_items: object) -> None:
    for arg, value in (("num_users", num_users), ("num_items", num_items)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")


def bipartite_edge_index(pairs: Tensor, num_users: int, num_items: int) -> Tensor:
    """The symmetric homogeneous ``edge_index`` (2, 2E) of a user-item pair tensor."""
    _check_counts(num_users, num_items)
    pairs = check_pairs(pairs, num_users, num_items)
    users, items = pairs[0], pairs[1] + num_users
    return torch.stack([torch.cat([users, items]), torch.cat([items, users])])


def pair_keys(pairs: Tensor, num_items: int) -> Tensor:
    """One int64 key per (user, item) pair: ``user * num_items + item``."""
    return pairs[0] * num_items + pairs[1]


def split_request(
    pairs: Tensor, request: Tensor, num_users: int, num_items: int
) -> tuple[Tensor, Tensor]:
    """Remove an unlearning request from a graph.

    Returns ``(remaining_pairs, request_pairs)``. Raises ``ValueError`` for an empty request,
    ids out of range, duplicate edges or edges that are not in ``pairs``.
    """
    _check_counts(num_users, num_items)
    pairs = check_pairs(pairs, num_users, num_items, "pairs")
    request = check_pairs(request, num_users, num_items, "request")
    if request.size(1) == 0:
        raise ValueError("request is empty: an unlearning request needs at least one edge")
    keys = pair_keys(pairs, num_items)
    req_keys = pair_keys(request, num_items)
    if torch.unique(req_keys).numel() != req_keys.numel():
        raise ValueError("request holds duplicate edges; pass each (user, item) edge once")
    present = torch.isin(req_keys, keys)
    if not bool(present.all()):
        bad = request[:, ~present][:, :5].t().tolist()
        raise ValueError(
            f"request has {int((~present).sum())} edge(s) that are not in the graph, "
            f"e.g. (user, item) {bad}; only existing interactions can be unlearned"
        )
    keep = ~torch.isin(keys, req_keys)
    return pairs[:, keep], request


def check_no_isolated(pairs: Tensor, num_users: int, num_items: int) -> None:
    """Raise ``ValueError`` when a user or an item has no interaction in ``pairs``."""
    users = torch.bincount(pairs[0], minlength=num_users)
    items = torch.bincount(pairs[1], minlength=num_items)
    if bool((users == 0).any()) or bool((items == 0).any()):
        raise ValueError(
            f"the training graph has isolated nodes ({int((users == 0).sum())} users and "
            f"{int((items == 0).sum())} items without any interaction); LightGCN cannot "
            "learn them, so re-index the graph without them (load_movielens_100k does)"
        )


@dataclass
class RecGraph:
    """A user-item interaction graph with a train/test split (pair tensors, local item ids)."""

    num_users: int
    num_items: int
    train: Tensor
    test: Tensor
    name: str = "graph"

    def __post_init__(self) -> None:
        _check_counts(self.num_users, self.num_items)
        self.train = check_pairs(self.train, self.num_users, self.num_items, "train")
        self.test = check_pairs(self.test, self.num_users, self.num_items, "test")

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items

    def edge_index(self, pairs: Tensor | None = None) -> Tensor:
        """Homogeneous symmetric ``edge_index`` of ``pairs`` (default: the train edges)."""
        return bipartite_edge_index(
            self.train if pairs is None else pairs, self.num_users, self.num_items
        )

    def to_hetero(self) -> HeteroData:
        """The train graph as a PyG ``HeteroData`` (user -rates-> item and its reverse)."""
        data = HeteroData()
        data["user"].num_nodes = self.num_users
        data["item"].num_nodes = self.num_items
        data[EDGE_TYPE].edge_index = self.train.clone()
        data[EDGE_TYPE].test_edge_index = self.test.clone()
        return data

    def with_train(self, train: Tensor) -> RecGraph:
        return RecGraph(self.num_users, self.num_items, train, self.test, self.name)


class RandomEdgeRequest(BaseTransform):
    """A PyG transform that samples a random unlearning request.

    It takes a ``HeteroData`` with ``("user", "rates", "item")`` edges and returns a copy
    whose ``edge_index`` is the remaining graph and whose ``drop_edge_index`` holds the
    request: a uniform ``drop_rate`` share of the edges, as the reference's pre-training
    simulation (Shuvayu12/UnlearnRec2:data_handler.py ``random_drop_edges``).
    """

    def __init__(self, drop_rate: float = 0.2, seed: int | None = None) -> None:
        if not isinstance(drop_rate, int | float) or not 0.0 < float(drop_rate) < 1.0:
            raise ValueError(f"drop_rate must be a float in (0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def sample(self, num_edges: int) -> tuple[Tensor, Tensor]:
        """Indices (kept, dropped) of a random split of ``num_edges`` edges."""
        perm = torch.randperm(num_edges, generator=self.generator)
        n_keep = int((1.0 - self.drop_rate) * num_edges)  # reference: int((1-rate)*length)
        if n_keep == num_edges:
            n_keep -= 1  # always drop at least one edge
        return perm[:n_keep], perm[n_keep:]

    def forward(self, data: HeteroData) -> HeteroData:  # type: ignore[override]
        if not isinstance(data, HeteroData) or EDGE_TYPE not in data.edge_types:
            raise TypeError(
                f"RandomEdgeRequest expects a HeteroData with {EDGE_TYPE} edges, got "
                f"{type(data).__name__}"
            )
        store = data[EDGE_TYPE]
        edge_index = store.edge_index
        if edge_index.size(1) < 2:
            raise ValueError("RandomEdgeRequest needs a graph with at least 2 edges")
        keep, drop = self.sample(edge_index.size(1))
        store.drop_edge_index = edge_index[:, drop]
        store.edge_index = edge_index[:, keep]
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(drop_rate={self.drop_rate})"


# -- data -----------------------------------------------------------------------------------


def _split(pairs: np.ndarray, num_users: int, test_ratio: float, seed: int, name: str) -> RecGraph:
    """Per-user random split, then re-index items so that every item has a train edge."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    pairs = pairs[order]
    # stable sort by user keeps the random order inside each user's block
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    counts = np.bincount(pairs[:, 0], minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(pairs)) - np.repeat(starts, counts)
    n_test = np.floor(counts * test_ratio).astype(np.int64)
    is_test = rank < np.repeat(n_test, counts)
    train, test = pairs[~is_test], pairs[is_test]
    items = np.unique(train[:, 1])
    remap = -np.ones(pairs[:, 1].max() + 1, dtype=np.int64)
    remap[items] = np.arange(len(items))
    train = np.stack([train[:, 0], remap[train[:, 1]]])
    test = test[remap[test[:, 1]] >= 0]
    test = np.stack([test[:, 0], remap[test[:, 1]]])
    return RecGraph(
        num_users, len(items), torch.from_numpy(train), torch.from_numpy(test), name=name
    )


def movielens_100k_path() -> Path:
    """Where ``ml-100k.inter`` lies inside the installed ``recbole`` wheel (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "MovieLens-100K is read from inside the recbole wheel, which is not installed: "
            "`pip install trainforge-unlearnrec[ml100k]` (or, without recbole's heavy "
            "dependencies, `pip install --no-deps recbole`)"
        )
    path = Path(next(iter(spec.submodule_search_locations)))
    path = path / "dataset_example" / "ml-100k" / "ml-100k.inter"
    if not path.is_file():
        raise FileNotFoundError(f"recbole is installed but {path} is missing")
    return path


def load_movielens_100k(test_ratio: float = 0.2, seed: int = 0) -> RecGraph:
    """MovieLens-100K (943 users, 100k ratings) as implicit feedback with a per-user split.

    Every rating counts as an interaction (the usual implicit-feedback convention). For each
    user a ``test_ratio`` share of the ratings, chosen at random with ``seed``, is held out;
    items that end up with no training interaction are dropped from the item set (and their
    test edges with them), so the training graph has no isolated node. The file is read
    from the recbole wheel; the data keep the GroupLens terms (research use only).
    """
    if not isinstance(test_ratio, int | float) or not 0.0 < float(test_ratio) < 1.0:
        raise ValueError(f"test_ratio must be a float in (0, 1), got {test_ratio!r}")
    raw = np.loadtxt(movielens_100k_path(), skiprows=1, usecols=(0, 1), dtype=np.int64)
    users = np.unique(raw[:, 0], return_inverse=True)[1]
    items = np.unique(raw[:, 1], return_inverse=True)[1]
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    return _split(pairs, int(users.max()) + 1, float(test_ratio), seed, "MovieLens-100K")


def planted_communities(
    num_users: int = 300,
    num_items: int = 400,
    num_clusters: int = 6,
    interactions_per_user: int = 20,
    p_in: float = 0.9,
    test_ratio: float = 0.2,
    seed: int = 0,
) -> RecGraph:
    """A synthetic graph with planted communities (the spec's toy: 300 users, 400 items, 6
    clusters). Each user draws ``interactions_per_user`` distinct items, a ``p_in`` share of
    them from its own cluster."""
    _check_counts(num_users, num_items)
    if not isinstance(num_clusters, int) or not 1 <= num_clusters <= min(num_users, num_items):
        raise ValueError(
            f"num_clusters must be an int in [1, min(users, items)], got {num_clusters!r}"
        )
    if not 0.0 <= p_in <= 1.0:
        raise ValueError(f"p_in must be in [0, 1], got {p_in!r}")
    per_cluster = num_items // num_clusters
    if not 1 <= interactions_per_user <= per_cluster:
        raise ValueError(
            f"interactions_per_user must be in [1, {per_cluster}] (items per cluster), got "
            f"{interactions_per_user!r}"
        )
    rng = np.random.default_rng(seed)
    user_c = np.arange(num_users) % num_clusters
    item_c = np.arange(num_items) % num_clusters
    rows = []
    for u in range(num_users):
        own = np.flatnonzero(item_c == user_c[u])
        other = np.flatnonzero(item_c != user_c[u])
        n_in = int(rng.binomial(interactions_per_user, p_in))
        n_in = min(n_in, len(own))
        chosen = [rng.choice(own, n_in, replace=False)]
        if interactions_per_user - n_in and len(other):
            chosen.append(rng.choice(other, interactions_per_user - n_in, replace=False))
        for i in np.concatenate(chosen):
            rows.append((u, int(i)))
    pairs = np.unique(np.array(rows, dtype=np.int64), axis=0)
    return _split(pairs, num_users, test_ratio, seed, "planted communities (synthetic)")


def inject_random_edges(graph: RecGraph, num_edges: int, seed: int = 0) -> tuple[RecGraph, Tensor]:
    """Add ``num_edges`` fake interactions (random users with random items they never
    interacted with, in train or test) to the training graph.

    Returns the attacked graph and the fake pairs: the unlearning request to evaluate.
    The reference attack picks each node's least-scored counterpart under a trained model
    (Shuvayu12/UnlearnRec2:make_noise_dataset.py); random fakes need no trained model.
    """
    if not isinstance(num_edges, int) or num_edges < 1:
        raise ValueError(f"num_edges must be a positive int, got {num_edges!r}")
    free = graph.num_users * graph.num_items - graph.train.size(1) - graph.test.size(1)
    if num_edges > free // 2:
        raise ValueError(f"num_edges={num_edges} is more than half of the {free} non-edges")
    gen = torch.Generator().manual_seed(seed)
    taken = set(pair_keys(torch.cat([graph.train, graph.test], 1), graph.num_items).tolist())
    fakes: list[tuple[int, int]] = []
    while len(fakes) < num_edges:
        u = int(torch.randint(graph.num_users, (1,), generator=gen))
        i = int(torch.randint(graph.num_items, (1,), generator=gen))
        key = u * graph.num_items + i
        if key not in taken:
            taken.add(key)
            fakes.append((u, i))
    fake = torch.tensor(fakes, dtype=torch.long).t()
    return graph.with_train(torch.cat([graph.train, fake], 1)), fake


def holdout_split(
    pairs: Tensor, num_users: int, num_items: int, share: float = 0.05, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split ``pairs`` into ``(train, validation)``: a random ``share`` of them held out,
    except those whose removal would leave a user or an item without any interaction
    (those stay in train). Used for the fine-tuning guard's validation interactions,
    which the base model must never have seen."""
    _check_counts(num_users, num_items)
    pairs = check_pairs(pairs, num_users, num_items)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share!r}")
    gen = torch.Generator().manual_seed(seed)
    val = torch.zeros(pairs.size(1), dtype=torch.bool)
    val[torch.randperm(pairs.size(1), generator=gen)[: int(share * pairs.size(1))]] = True
    users = torch.bincount(pairs[0, ~val], minlength=num_users)
    items = torch.bincount(pairs[1, ~val], minlength=num_items)
    val &= (users[pairs[0]] > 0) & (items[pairs[1]] > 0)
    if not bool(val.any()):
        raise ValueError("holdout_split held out no interaction: the graph is too sparse")
    return pairs[:, ~val], pairs[:, val]


def adversarial_fake_edges(
    user_emb: Tensor,
    item_emb: Tensor,
    ratio: float = 0.5,
    exclude: Tensor | None = None,
    seed: int = 0,
) -> Tensor:
    """The reference's adversarial fake interactions (least-scored counterparts).

    For a random ``ratio`` share of the users, the item each one scores lowest under the
    embeddings; for a random ``ratio`` share of the items, the user scoring it lowest
    (Shuvayu12/UnlearnRec2:make_noise_dataset.py ``find_least_related_edges_smp``, whose
    experiments use ratio 0.5: ``--adv_method lightgcn0.5``). Pairs in ``exclude`` (a
    ``(2, E)`` tensor, e.g. the train and test interactions) are never chosen, and a pair
    picked from both sides is returned once (the reference's COO matrix would merge it).
    Returns a ``(2, M)`` tensor of (user, item) pairs.
    """
    for name, t in (("user_emb", user_emb), ("item_emb", item_emb)):
        if not isinstance(t, Tensor) or t.dim() != 2 or not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a float tensor of shape (n, d)")
    if user_emb.size(1) != item_emb.size(1) or user_emb.size(0) < 1 or item_emb.size(0) < 1:
        raise ValueError(
            f"user_emb {tuple(user_emb.shape)} and item_emb {tuple(item_emb.shape)} need "
            "at least one row each and the same width"
        )
    if not torch.isfinite(user_emb).all() or not torch.isfinite(item_emb).all():
        raise ValueError("user_emb and item_emb must be finite")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    nu, ni = user_emb.size(0), item_emb.size(0)
    with torch.no_grad():
        scores = user_emb @ item_emb.t()
        if exclude is not None:
            exclude = check_pairs(exclude, nu, ni, "exclude")
            scores[exclude[0], exclude[1]] = math.inf
    gen = torch.Generator().manual_seed(seed)
    users = torch.randperm(nu, generator=gen)[: int(ratio * nu)]
    items = torch.randperm(ni, generator=gen)[: int(ratio * ni)]
    if users.numel() + items.numel() == 0:
        raise ValueError(f"ratio={ratio} selects no user and no item")
    u_side = scores[users]
    i_side = scores[:, items]
    if bool(torch.isinf(u_side).all(1).any()) or bool(torch.isinf(i_side).all(0).any()):
        raise ValueError("a chosen node is linked to every counterpart: no fake edge is left")
    pairs = torch.cat(
        [
            torch.stack([users, u_side.argmin(1)]),
            torch.stack([i_side.argmin(0), items]),
        ],
        1,
    )
    keys = torch.unique(pair_keys(pairs, ni))
    return torch.stack([keys // ni, keys % ni])


def inject_adversarial_edges(
    graph: RecGraph, user_emb: Tensor, item_emb: Tensor, ratio: float = 0.5, seed: int = 0
) -> tuple[RecGraph, Tensor]:
    """Add :func:`adversarial_fake_edges` (scored by a model trained on ``graph``) to the
    training graph; train and test interactions are never chosen.

    Returns the attacked graph and the fake pairs: the unlearning request to evaluate.
    """
    if not isinstance(graph, RecGraph):
        raise TypeError(f"graph must be a RecGraph, got {type(graph).__name__}")
    if user_emb.size(0) != graph.num_users or item_emb.size(0) != graph.num_items:
        raise ValueError(
            f"embeddings have {user_emb.size(0)} users / {item_emb.size(0)} items; the graph "
            f"has {graph.num_users} / {graph.num_items}"
        )
    taken = torch.cat([graph.train, graph.test], 1)
    fake = adversarial_fake_edges(user_emb, item_emb, ratio, taken, seed)
    return graph.with_train(torch.cat([graph.train, fake], 1)), fake


def sample_non_edges(
    pairs: Tensor, num_users: int, num_items: int, num: int, seed: int = 0
) -> Tensor:
    """``num`` random (user, item) pairs that are not in ``pairs`` (score monitors)."""
    _check_counts(num_users, num_items)
    pairs = check_pairs(pairs, num_users, num_items)
    if not isinstance(num, int) or num < 1 or num > (num_users * num_items - pairs.size(1)):
        raise ValueError(f"num must be a positive int no larger than the non-edges, got {num!r}")
    gen = torch.Generator().manual_seed(seed)
    keys = pair_keys(pairs, num_items)
    out = torch.empty(2, 0, dtype=torch.long)
    while out.size(1) < num:
        u = torch.randint(num_users, (2 * num,), generator=gen)
        i = torch.randint(num_items, (2 * num,), generator=gen)
        ok = ~torch.isin(u * num_items + i, keys)
        out = torch.cat([out, torch.stack([u[ok], i[ok]])], 1)
    return out[:, :num]
