"""Does the search's straight-through gate gradient rank each 1:2 pair as enumerating it does?

Recipe (from the repository root; about 1.5 min per seed on a loaded 2-core machine):

    OMP_NUM_THREADS=1 uv run python packages/tinyfusion/benchmarks/st_gradient_check.py \
        --seeds 0,1,2,3

Per seed, the DiT of ``compare_pruning.py`` (sklearn digits, depth 8, hidden 32, 400 pre-training
steps, same seeds) is taken to the state of the search's first step: 1:2 gates at their uniform
start, Delta W zero. On 20 batches of 32, each sample draws a keep-pattern (one layer of every
pair), and for every pair g two numbers are averaged over samples:

* ``st``: dL/dm_first - dL/dm_second, the straight-through signal that moves the pair's logits
  (``gumbel_softmax(hard=True)`` passes dL/dy_k = sum_j O_kj dL/dm_j to the softmax;
  ``VainF/TinyFusion:models_with_layer_pruning.py``); negative favours the first layer;
* ``exact``: L(keep first) - L(keep second) with the other pairs' draws, t and noise held fixed:
  the difference the search is meant to estimate; negative favours the first layer.

* ``rloo``: the opt-in ``estimator="rloo"`` gradient on the same batches (``--rloo-draws`` calls
  per batch, each two fresh masks per sample with shared t and noise), as
  ``(g_first - g_second) / (scaling / 2)``: at uniform 1:2 gates this estimates ``exact``
  without bias (d/dphi of E[L] is ``scaling * p (1 - p) = scaling / 4`` times the option loss
  difference per logit); ``rloo_se`` is its standard error over the calls.

Pairs where the signs differ are pairs the gradient search is pushed to decide wrongly.
One JSON line per seed, with the single-layer removal scores of the importance baseline.
"""

from __future__ import annotations

import argparse
import json

import torch
from compare_pruning import pretrained  # this folder: the cached pre-trained originals

from trainforge_tinyfusion import GatedDepth, GaussianDiffusion, importance_pruning
from trainforge_tinyfusion.demo import _batches, _digits
from trainforge_tinyfusion.search import _rloo_objective


def check_seed(
    seed: int,
    args: argparse.Namespace,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    diff: GaussianDiffusion,
) -> dict:
    """The ``st`` and ``exact`` pair preferences of one seed's pre-trained DiT."""
    pairs = args.depth // 2
    xtr, ytr, xte, yte = data
    # the same model as compare_pruning.py for this seed (from its /tmp cache when there)
    model, _ = pretrained(
        seed, args.depth, args.hidden, args.pretrain, args.batch, 250, xtr, ytr, xte, yte, diff
    )
    imp = importance_pruning(
        model,
        _batches(xtr, ytr, 8, args.batch, seed + 2),
        lambda m, b: diff.loss(m, b[0], b[1]),
        pairs,
        seed=seed,
    )
    model.eval()  # no label dropout: both evaluations of a sample see the same inputs
    gates = GatedDepth(model, [(1, 2)] * pairs)
    current: dict[str, torch.Tensor] = {}
    gates.sample_mask = lambda batch: current["mask"]  # type: ignore[method-assign]

    def losses(mask: torch.Tensor, x: torch.Tensor, y: torch.Tensor, s: int) -> torch.Tensor:
        current["mask"] = mask
        gates._mask = None
        torch.manual_seed(s)  # the same t and noise for every mask of this batch
        return diff.loss(model, x, y, per_sample=True)

    st = torch.zeros(pairs)
    exact = torch.zeros(pairs)
    n = 0
    batches = _batches(xtr, ytr, args.batches, args.batch, seed + 1)
    for i, (x, y) in enumerate(batches):
        g = torch.Generator().manual_seed(1000 * seed + i)
        pick = torch.randint(0, 2, (len(x), pairs), generator=g)
        base = torch.zeros(len(x), args.depth)
        for k in range(pairs):
            base[torch.arange(len(x)), 2 * k + pick[:, k]] = 1.0
        mask = base.clone().requires_grad_(True)
        losses(mask, x, y, i).sum().backward()
        assert mask.grad is not None
        with torch.no_grad():
            for k in range(pairs):
                st[k] += (mask.grad[:, 2 * k] - mask.grad[:, 2 * k + 1]).sum()
                first, second = base.clone(), base.clone()
                first[:, 2 * k], first[:, 2 * k + 1] = 1.0, 0.0
                second[:, 2 * k], second[:, 2 * k + 1] = 0.0, 1.0
                exact[k] += (losses(first, x, y, i) - losses(second, x, y, i)).sum()
        n += len(x)
    st, exact = st / n, exact / n
    # the rloo estimator on the same batches: fresh hard masks, no straight-through path
    gates.set_mode("categorical")
    gates.generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    draws = []
    for x, y in batches:
        for _ in range(args.rloo_draws):
            objective, _ = _rloo_objective(
                model, gates, (x, y), lambda m, b: diff.loss(m, b[0], b[1], per_sample=True)
            )
            grads = torch.autograd.grad(objective, list(gates.gumbel_gates))
            draws.append(torch.stack([(g[0] - g[1]) / (gates.scaling / 2) for g in grads]))
    rl = torch.stack(draws)
    rloo, rloo_se = rl.mean(0), rl.std(0) / len(rl) ** 0.5
    row = {
        "seed": seed,
        "st": [round(v, 4) for v in st.tolist()],
        "exact": [round(v, 4) for v in exact.tolist()],
        "rloo": [round(v, 4) for v in rloo.tolist()],
        "rloo_se": [round(v, 4) for v in rloo_se.tolist()],
        "disagree_pairs": [k for k in range(pairs) if (st[k] > 0) != (exact[k] > 0)],
        "rloo_disagree_pairs": [k for k in range(pairs) if (rloo[k] > 0) != (exact[k] > 0)],
        "importance_scores": [round(s, 4) for s in imp.scores or []],
    }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--pretrain", type=int, default=400)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--rloo-draws", type=int, default=4, help="rloo calls per batch")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2,3")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = _digits()
    diff = GaussianDiffusion()
    for seed in (int(s) for s in args.seeds.split(",")):
        print(json.dumps(check_seed(seed, args, data, diff)), flush=True)


if __name__ == "__main__":
    main()
