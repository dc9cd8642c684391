"""trainforge-unlearnrec: Pre-training for Recommendation Unlearning (arXiv:2505.22649).

A PyG-native re-implementation of UnlearnRec's Influence Encoder: pre-trained on simulated
random edge-removal requests against a frozen LightGCN, it maps an unlearning request to an
update of the base model's initial embeddings in one forward pass (zero-shot), optionally
followed by a short fine-tuning.
"""

from importlib.metadata import PackageNotFoundError, version

from trainforge_unlearnrec.backbone import (
    BaseRecAdapter,
    DenseLightGCN,
    PyGLightGCNAdapter,
    lightgcn,
    retrain_without,
    sample_negatives,
    train_lightgcn,
)
from trainforge_unlearnrec.encoder import (
    FeedForwardLayer,
    InfluenceEncoder,
    UnlearnRecModel,
    normalized_adjacency,
)
from trainforge_unlearnrec.graph import (
    RandomEdgeRequest,
    RecGraph,
    adversarial_fake_edges,
    bipartite_edge_index,
    holdout_split,
    inject_adversarial_edges,
    inject_random_edges,
    load_movielens_100k,
    planted_communities,
    sample_non_edges,
    split_request,
)
from trainforge_unlearnrec.losses import align_loss, bpr_loss, forget_loss, ssl_loss
from trainforge_unlearnrec.metrics import edge_scores, forget_score_gap, ndcg_at_k, recall_at_k
from trainforge_unlearnrec.training import (
    FinetuneConfig,
    PretrainConfig,
    Request,
    UnlearnResult,
    pretrain,
    unlearn,
    unlearning_loss,
    zero_shot,
)

try:
    __version__ = version("trainforge-unlearnrec")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "BaseRecAdapter",
    "DenseLightGCN",
    "FeedForwardLayer",
    "FinetuneConfig",
    "InfluenceEncoder",
    "PretrainConfig",
    "PyGLightGCNAdapter",
    "RandomEdgeRequest",
    "RecGraph",
    "Request",
    "UnlearnRecModel",
    "UnlearnResult",
    "__version__",
    "adversarial_fake_edges",
    "align_loss",
    "bipartite_edge_index",
    "bpr_loss",
    "edge_scores",
    "forget_loss",
    "forget_score_gap",
    "holdout_split",
    "inject_adversarial_edges",
    "inject_random_edges",
    "lightgcn",
    "load_movielens_100k",
    "ndcg_at_k",
    "normalized_adjacency",
    "planted_communities",
    "pretrain",
    "recall_at_k",
    "retrain_without",
    "sample_negatives",
    "sample_non_edges",
    "split_request",
    "ssl_loss",
    "train_lightgcn",
    "unlearn",
    "unlearning_loss",
    "zero_shot",
]
