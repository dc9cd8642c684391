"""Pre-training the Influence Encoder on simulated requests, and unlearning a real one.

Loop and defaults follow Shuvayu12/UnlearnRec2:main_drop.py (pre-training),
fineTune.py (fine-tuning) and examples/pretrain_4_unlearning/*.sh (the weights).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from trainforge_unlearnrec.backbone import parameter_l2, sample_negatives
from trainforge_unlearnrec.encoder import UnlearnRecModel
from trainforge_unlearnrec.graph import (
    RandomEdgeRequest,
    bipartite_edge_index,
    check_pairs,
    pair_keys,
    sample_non_edges,
    split_request,
)
from trainforge_unlearnrec.losses import align_loss, bpr_loss, forget_loss, ssl_loss
from trainforge_unlearnrec.metrics import forget_score_gap, recall_at_k

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Pre-training knobs; defaults from unlearn_lightgcn_on_gowalla.sh / params.py."""

    epochs: int = 256  # --epoch 256
    steps_per_epoch: int = 2500  # main_drop.py: at most 2500 batches per epoch
    batch_size: int = 1024  # --batch 1024
    lr: float = 1e-3  # --lr 0.001
    drop_rate: float = 0.2  # --pretrain_drop_rate 0.2 (params.py default 0.1)
    resample_every: int = 5  # --sim_epoch 5
    forget_weight: float = 1.0  # --unlearn_wei 1
    forget_kind: Literal["logsig", "mean"] = "logsig"  # --unlearn_type v1
    align_weight: float = 0.005  # --align_wei 0.005
    align_temp: float = 1.0  # --align_temp 1
    ssl_weight: float = 1e-3  # --unlearn_ssl 0.001
    ssl_temp: float = 1.0  # --hyper_temp 1
    ssl_keep: float = 0.95  # Model.py: edgeDropper(ts_drp_adj, 0.95)
    reg: float = 1e-7  # --reg 1e-7 (on the frozen base's parameters: a constant)
    val_drop_rate: float = 0.003  # --test_drop_rate 0.003
    num_negatives: int = 2048  # random non-edges for the gap monitor
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_ints(self, "epochs", "steps_per_epoch", "batch_size", "resample_every")
        _in_open_unit(self, "drop_rate", "val_drop_rate")
        if not 0.0 < self.ssl_keep <= 1.0:
            raise ValueError(f"ssl_keep must be in (0, 1], got {self.ssl_keep!r}")
        _non_negative(self, "forget_weight", "align_weight", "ssl_weight", "reg")
        _positive(self, "lr", "align_temp", "ssl_temp")


@dataclass
class FinetuneConfig:
    """Fine-tuning knobs; loss weights from finetune_unlearned_lightgcn_on_gowalla.sh.

    The reference (fineTune.py) trains the MLP and a copy of ``E0`` and keeps the model with
    the best score gap on the request itself, checked once per epoch (``select="gap"``).
    That criterion ignores recommendation quality, and on the demo's data fine-tuning lost
    Recall@20 against the zero-shot encoder. ``select="guarded"`` (the default) holds out a
    ``val_share`` of the remaining interactions from the fine-tuning loss and keeps the
    best-gap checkpoint among those whose Recall@20 on them is at least
    ``(1 - recall_tolerance)`` times the zero-shot encoder's, measured with the held-out
    interactions also removed from the propagation graph (as test interactions are; the
    trained model keeps them in its graph); the zero-shot encoder (step 0)
    always qualifies, so fine-tuning never returns a model that ranks the held-out
    interactions worse than zero-shot beyond the tolerance. ``check_every`` checks every
    that many steps (0: once per epoch, as the reference) and ``patience`` stops after that
    many consecutive checks failing the guard (0: never).
    """

    epochs: int = 5
    steps_per_epoch: int = 2500
    batch_size: int = 1024  # --batch 1024
    lr: float = 1e-3  # --lr 0.001
    forget_weight: float = 0.2  # --unlearn_wei 0.2
    forget_kind: Literal["logsig", "mean"] = "logsig"
    align_weight: float = 0.01  # --align_wei 0.01
    align_temp: float = 10.0  # --align_temp 10
    reg: float = 1e-7
    # fineTune.py assigns the re-propagated embeddings to model.model.fnl_embeds, an
    # attribute nothing reads, so the alignment target stays the pre-request E_fin
    # ("original"). "remaining" aligns to f(E0, Â') instead (what was probably meant).
    align_target: Literal["original", "remaining"] = "original"
    # fineTune.py: the MLP's weights and biases and a copy of E0 ("mlp", "e0")
    trainable: tuple[str, ...] = ("mlp", "e0")
    keep_best: bool = True  # fineTune.py keeps the best-gap model, checked each epoch
    select: Literal["gap", "guarded"] = "guarded"
    val_share: float = 0.05
    recall_tolerance: float = 0.0
    val_k: int = 20
    check_every: int = 0
    patience: int = 0
    num_negatives: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        _positive_ints(self, "epochs", "steps_per_epoch", "batch_size", "val_k")
        _non_negative(self, "forget_weight", "align_weight", "reg")
        _positive(self, "lr", "align_temp")
        if self.align_target not in ("original", "remaining"):
            raise ValueError(
                f"align_target must be 'original' or 'remaining', got {self.align_target!r}"
            )
        self.trainable = tuple(self.trainable)
        if not self.trainable or not set(self.trainable) <= {"mlp", "e0"}:
            raise ValueError(
                f"trainable must name a non-empty subset of ('mlp', 'e0'), got {self.trainable!r}"
            )
        if self.select not in ("gap", "guarded"):
            raise ValueError(f"select must be 'gap' or 'guarded', got {self.select!r}")
        _in_open_unit(self, "val_share")
        if not isinstance(self.recall_tolerance, int | float) or not (
            0.0 <= self.recall_tolerance < 1.0
        ):
            raise ValueError(f"recall_tolerance must be in [0, 1), got {self.recall_tolerance!r}")
        for n in ("check_every", "patience"):
            v = getattr(self, n)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"FinetuneConfig.{n} must be an int >= 0, got {v!r}")


def _positive_ints(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{type(cfg).__name__}.{n} must be a positive int, got {v!r}")


def _in_open_unit(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int | float) or not 0.0 < v < 1.0:
            raise ValueError(f"{type(cfg).__name__}.{n} must be in (0, 1), got {v!r}")


def _non_negative(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int | float) or not v >= 0:
            raise ValueError(f"{type(cfg).__name__}.{n} must be >= 0, got {v!r}")


def _positive(cfg: object, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        if not isinstance(v, int | float) or not v > 0:
            raise ValueError(f"{type(cfg).__name__}.{n} must be > 0, got {v!r}")


@dataclass
class Request:
    """An unlearning request applied to a graph: remaining and dropped pairs and edges."""

    remain_pairs: Tensor
    drop_pairs: Tensor
    remain_edge_index: Tensor
    drop_edge_index: Tensor

    @classmethod
    def build(cls, model: UnlearnRecModel, train_pairs: Tensor, request: Tensor) -> Request:
        remain, drop = split_request(train_pairs, request, model.num_users, model.num_items)
        return cls(
            remain,
            drop,
            bipartite_edge_index(remain, model.num_users, model.num_items),
            bipartite_edge_index(drop, model.num_users, model.num_items),
        )


def unlearning_loss(
    model: UnlearnRecModel,
    req: Request,
    users: Tensor,
    pos: Tensor,
    neg: Tensor,
    forget_weight: float,
    align_weight: float,
    align_temp: float,
    ssl_weight: float = 0.0,
    ssl_temp: float = 1.0,
    ssl_keep: float = 0.95,
    reg: float = 1e-7,
    forget_kind: Literal["logsig", "mean"] = "logsig",
    align_target: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``L_BPR + reg + w_u L_u + w_p L_p + w_c L_c`` (Model.py ``GraphUnlearning.cal_loss``)."""
    enc = model.encoder
    delta, clean, noisy = enc.encode(
        req.drop_edge_index,
        model.final_embeds,
        req.remain_edge_index,
        ssl_keep if ssl_weight > 0 else None,
        generator,
    )
    emb = model.backbone.propagate(model.init_embeds + delta, req.remain_edge_index)
    ue, ie = model.split(emb)
    tu, ti = model.split(model.final_embeds if align_target is None else align_target)
    l_bpr = bpr_loss(ue[users], ie[pos], ie[neg])
    l_reg = reg * parameter_l2(model.backbone) if reg else torch.zeros(())
    l_u = forget_loss(ue[req.drop_pairs[0]], ie[req.drop_pairs[1]], forget_kind)
    l_p = align_loss(ue[users], tu[users], ie[pos], ti[pos], align_temp)
    total = l_bpr + l_reg + forget_weight * l_u + align_weight * l_p
    l_c = torch.zeros(())
    if ssl_weight > 0:
        nu = model.num_users
        uu, ui = torch.unique(users), torch.unique(pos)
        for c, n in zip(clean, noisy, strict=True):
            c = c.detach()  # the clean view is the target (Model.py: embeds1.detach())
            l_c = (
                l_c
                + ssl_loss(c[:nu], n[:nu], uu, ssl_temp)
                + ssl_loss(c[nu:], n[nu:], ui, ssl_temp)
            )
        total = total + ssl_weight * l_c
    parts = {
        "bpr": float(l_bpr.detach()),
        "reg": float(l_reg.detach()),
        "forget": float(l_u.detach()),
        "align": float(l_p.detach()),
        "ssl": float(l_c.detach()),
    }
    if not math.isfinite(float(total.detach())):
        raise FloatingPointError(f"unlearning loss is not finite: {parts}")
    return total, parts


@torch.no_grad()
def unlearned_embeddings(model: UnlearnRecModel, req: Request) -> tuple[Tensor, Tensor]:
    """User and item embeddings of the unlearned model for ``req`` (one forward pass)."""
    return model.split(model.embeddings(req.remain_edge_index, req.drop_edge_index))


def _gap(model: UnlearnRecModel, req: Request, negatives: Tensor) -> float:
    u, i = unlearned_embeddings(model, req)
    return forget_score_gap(u, i, req.drop_pairs, negatives)


def _batches(n: int, batch: int, max_steps: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for step, s in enumerate(range(0, n, batch)):
        if step >= max_steps:
            break
        yield perm[s : s + batch]


@dataclass
class PretrainLog:
    losses: list[dict[str, float]] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    best_gap: float = -math.inf
    seconds: float = 0.0


def pretrain(
    model: UnlearnRecModel,
    train_pairs: Tensor,
    config: PretrainConfig | None = None,
    val_request: Tensor | None = None,
) -> PretrainLog:
    """Pre-train the Influence Encoder on simulated random edge requests (main_drop.py).

    Every ``resample_every`` epochs the encoder is checked on ``val_request`` (default: a
    random ``val_drop_rate`` share of the edges) and kept when its score gap
    (random non-edges minus request edges) is the best so far; then a fresh random request
    of ``drop_rate`` of the edges is drawn. At the end the best encoder is loaded.
    """
    cfg = config or PretrainConfig()
    if not isinstance(model, UnlearnRecModel):
        raise TypeError(f"model must be an UnlearnRecModel, got {type(model).__name__}")
    train_pairs = check_pairs(train_pairs, model.num_users, model.num_items, "train_pairs")
    gen = torch.Generator().manual_seed(cfg.seed)
    if val_request is None:
        _, drop = RandomEdgeRequest(cfg.val_drop_rate, seed=cfg.seed + 1).sample(
            train_pairs.size(1)
        )
        val_request = train_pairs[:, drop]
    val = Request.build(model, train_pairs, val_request)
    negatives = sample_non_edges(
        train_pairs, model.num_users, model.num_items, cfg.num_negatives, cfg.seed + 2
    )
    sampler = RandomEdgeRequest(cfg.drop_rate, seed=cfg.seed + 3)
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0)
    out = PretrainLog()
    best: dict[str, Tensor] | None = None
    start = time.perf_counter()
    req: Request | None = None

    def checkpoint() -> None:
        nonlocal best
        gap = _gap(model, val, negatives)
        out.gaps.append(gap)
        if gap > out.best_gap:
            out.best_gap, best = gap, copy.deepcopy(model.encoder.state_dict())

    for epoch in range(cfg.epochs):
        if epoch % cfg.resample_every == 0:
            checkpoint()
            _, drop = sampler.sample(train_pairs.size(1))
            req = Request.build(model, train_pairs, train_pairs[:, drop])
        if req is None:  # unreachable: epoch 0 always samples
            raise RuntimeError("no request sampled")
        ep: dict[str, float] = {}
        n_steps = 0
        for idx in _batches(req.remain_pairs.size(1), cfg.batch_size, cfg.steps_per_epoch, gen):
            u, i = req.remain_pairs[0, idx], req.remain_pairs[1, idx]
            j = sample_negatives(req.remain_pairs, model.num_items, u, gen)
            loss, parts = unlearning_loss(
                model, req, u, i, j, cfg.forget_weight, cfg.align_weight, cfg.align_temp,
                cfg.ssl_weight, cfg.ssl_temp, cfg.ssl_keep, cfg.reg, cfg.forget_kind,
                generator=gen,
            )  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
            for k, v in parts.items():
                ep[k] = ep.get(k, 0.0) + v
        out.losses.append({k: v / max(n_steps, 1) for k, v in ep.items()})
        log.debug("pretrain epoch %d: %s", epoch, out.losses[-1])
    checkpoint()
    if best is not None:
        model.encoder.load_state_dict(best)
    out.seconds = time.perf_counter() - start
    return out


@dataclass
class UnlearnResult:
    """What :func:`unlearn` and :func:`zero_shot` return: the unlearned user and item
    embeddings, the pairs left after the request, the score gap on the request at each check
    (and the losses), and the wall time."""

    user_emb: Tensor
    item_emb: Tensor
    remain_pairs: Tensor
    gaps: list[float] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    # fine-tuning only: the step of each check, the held-out Recall@K there ("guarded"),
    # and the step of the kept model (0: the zero-shot encoder)
    steps: list[int] = field(default_factory=list)
    val_recalls: list[float] = field(default_factory=list)
    selected_step: int = 0


def _holdout(remain: Tensor, share: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split the remaining pairs into (fit, held-out), at least one pair each."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(remain.size(1), generator=gen)
    n_val = min(max(1, int(share * remain.size(1))), remain.size(1) - 1)
    if n_val < 1:
        raise ValueError("select='guarded' needs at least 2 remaining interactions")
    return remain[:, perm[n_val:]], remain[:, perm[:n_val]]


def unlearn(
    model: UnlearnRecModel,
    train_pairs: Tensor,
    request: Tensor,
    config: FinetuneConfig | None = None,
    val_pairs: Tensor | None = None,
) -> UnlearnResult:
    """Unlearn ``request`` (a (2, M) tensor of (user, item) edges of ``train_pairs``).

    ``val_pairs``: validation interactions the base model never saw (not in
    ``train_pairs``), for ``select="guarded"``. Without them the guard holds out a
    ``val_share`` of the remaining training interactions instead, which the base model
    has memorised in ``E0``: a weaker check (on ML-100K their Recall@20 stayed flat while
    the test Recall@20 fell).

    The encoder's MLP and a trainable copy of ``E0`` (``config.trainable``) are fine-tuned
    with ``L_BPR + 0.2 L_u + 0.01 L_p`` (tau 10, no SSL) while ``H0`` and ``eta`` stay
    frozen (fineTune.py). Which checkpoint is returned follows ``config.select``: the
    best score gap on the request ("gap", the reference), or the best gap among the
    checkpoints that rank held-out remaining interactions at least as well as the
    zero-shot encoder ("guarded", the default; see :class:`FinetuneConfig`). For no
    training at all, use :func:`zero_shot`.
    """
    cfg = config or FinetuneConfig()
    if not isinstance(model, UnlearnRecModel):
        raise TypeError(f"model must be an UnlearnRecModel, got {type(model).__name__}")
    if not isinstance(cfg, FinetuneConfig):
        raise TypeError(f"config must be a FinetuneConfig, got {type(cfg).__name__}")
    start = time.perf_counter()
    req = Request.build(model, train_pairs, request)
    gen = torch.Generator().manual_seed(cfg.seed)
    negatives = sample_non_edges(
        req.remain_pairs, model.num_users, model.num_items, cfg.num_negatives, cfg.seed + 2
    )
    guarded = cfg.select == "guarded"
    fit_pairs = req.remain_pairs
    fit_edge_index = req.remain_edge_index
    if val_pairs is not None:
        val_pairs = check_pairs(val_pairs, model.num_users, model.num_items, "val_pairs")
        if val_pairs.size(1) == 0:
            raise ValueError("val_pairs is empty")
        seen = torch.isin(
            pair_keys(val_pairs, model.num_items), pair_keys(train_pairs, model.num_items)
        )
        if bool(seen.any()):
            raise ValueError(
                f"{int(seen.sum())} val_pairs are in train_pairs: validation interactions "
                "must be held out from the graph the base model was trained on"
            )
        if not guarded:
            raise ValueError("val_pairs is only used with select='guarded'")
    if guarded:
        if cfg.val_k > model.num_items:
            raise ValueError(f"val_k={cfg.val_k} is larger than the item count {model.num_items}")
        if val_pairs is None:
            fit_pairs, val_pairs = _holdout(req.remain_pairs, cfg.val_share, cfg.seed + 4)
            fit_edge_index = bipartite_edge_index(fit_pairs, model.num_users, model.num_items)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    if "mlp" in cfg.trainable:
        for p in model.encoder.mlp.parameters():
            p.requires_grad_(True)
    if "e0" in cfg.trainable:
        model.init_embeds.requires_grad_(True)
    target = None
    if cfg.align_target == "remaining":
        with torch.no_grad():
            target = model.backbone.propagate(model.init_embeds, req.remain_edge_index)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=0)
    out = UnlearnResult(model.init_embeds, model.init_embeds, req.remain_pairs)
    best_gap, best = -math.inf, None
    floor = -math.inf
    failed = 0

    def check(step: int) -> bool:
        """Record a checkpoint; returns False when early stopping triggers."""
        nonlocal best_gap, best, floor, failed
        u, i = unlearned_embeddings(model, req)
        gap = forget_score_gap(u, i, req.drop_pairs, negatives)
        out.gaps.append(gap)
        out.steps.append(step)
        ok = True
        if val_pairs is not None:
            # the held-out interactions are hidden from this propagation, as test ones are:
            # left in the graph they rank near the top whatever fine-tuning does
            with torch.no_grad():
                hu, hi = model.split(model.embeddings(fit_edge_index, req.drop_edge_index))
            rec = recall_at_k(hu, hi, fit_pairs, val_pairs, cfg.val_k)
            out.val_recalls.append(rec)
            if step == 0:
                floor = (1.0 - cfg.recall_tolerance) * rec
            ok = rec >= floor
        failed = 0 if ok else failed + 1
        if ok and (gap > best_gap or not cfg.keep_best):
            best_gap, out.selected_step = gap, step
            best = copy.deepcopy(
                {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
            )
        return not (cfg.patience and failed >= cfg.patience)

    step = 0
    going = check(0)
    for epoch in range(cfg.epochs):
        if not going:
            break
        ep: dict[str, float] = {}
        n_steps = 0
        for idx in _batches(fit_pairs.size(1), cfg.batch_size, cfg.steps_per_epoch, gen):
            u, i = fit_pairs[0, idx], fit_pairs[1, idx]
            j = sample_negatives(req.remain_pairs, model.num_items, u, gen)
            loss, parts = unlearning_loss(
                model, req, u, i, j, cfg.forget_weight, cfg.align_weight, cfg.align_temp,
                reg=cfg.reg, forget_kind=cfg.forget_kind, align_target=target,
            )  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
            step += 1
            for k, v in parts.items():
                ep[k] = ep.get(k, 0.0) + v
            if cfg.check_every and step % cfg.check_every == 0:
                going = check(step)
                if not going:
                    break
        out.losses.append({k: v / max(n_steps, 1) for k, v in ep.items()})
        log.debug("finetune epoch %d: %s", epoch, out.losses[-1])
        if going and not cfg.check_every:
            going = check(step)
    if going and cfg.check_every and step % cfg.check_every:
        check(step)  # the steps after the last periodic check
    if best is not None:
        model.load_state_dict(best, strict=False)
    model.init_embeds.requires_grad_(False)
    for p in model.encoder.mlp.parameters():
        p.requires_grad_(False)
    out.user_emb, out.item_emb = unlearned_embeddings(model, req)
    out.seconds = time.perf_counter() - start
    return out


def zero_shot(model: UnlearnRecModel, train_pairs: Tensor, request: Tensor) -> UnlearnResult:
    """Apply the pre-trained encoder to ``request`` with no training (one forward pass)."""
    if not isinstance(model, UnlearnRecModel):
        raise TypeError(f"model must be an UnlearnRecModel, got {type(model).__name__}")
    start = time.perf_counter()
    req = Request.build(model, train_pairs, request)
    u, i = unlearned_embeddings(model, req)
    return UnlearnResult(u, i, req.remain_pairs, seconds=time.perf_counter() - start)
