"""Fine-tuned vs zero-shot vs retraining, over seeds, on the demo's experiment.

Recipe (needs recbole for the data: `pip install --no-deps recbole`):

    OMP_NUM_THREADS=1 uv run python packages/unlearnrec/benchmarks/bench_finetune_arm.py \
        --users 300 --seeds 0 1 --attack adversarial

Each seed runs `trainforge_unlearnrec.demo.run_arms` (the demo's experiment: clean-graph
LightGCN = retraining baseline, fake interactions injected, base trained on the attacked
graph, encoder pre-trained on random requests, zero-shot) and then several fine-tuning
arms from the same pre-trained encoder, all with the same number of steps:

- `ft reference`: fineTune.py's recipe (MLP + a copy of E0, lr 1e-3, L_u 0.2, L_p 0.01 at
  tau 10, full passes over the remaining edges) with its selection: the best score gap on
  the request itself, checked once per epoch (`select="gap"`);
- `ft guarded`: the same training, checked every `--check` steps, keeping the best-gap
  checkpoint whose Recall@20 on 5% held-out remaining interactions is at least the
  zero-shot encoder's (`select="guarded"`, the package default);
- `ft guarded tol 5%`: the same, accepting validation Recall@20 down to 0.95x zero-shot's;
- `ft guarded e0 3e-4`: the guard with only E0 trained at lr 3e-4.

The guard's validation interactions are 5% of train held out before any model is trained
(the demo does the same).

Printed: per seed and as mean +- std over seeds, the fakes' mean score, random non-edges'
mean score, Recall@20 (and relative to retraining), NDCG@20, the kept fine-tuning step and
the wall time. `--users 0` runs all of ML-100K with the full demo's schedule.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from trainforge_unlearnrec.demo import _FULL, finetune_config, run_arms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=300, help="first N users of ML-100K; 0: all")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--attack", choices=["adversarial", "random"], default="adversarial")
    ap.add_argument("--base-epochs", type=int, default=None)
    ap.add_argument("--ft-epochs", type=int, default=6, help="full passes over the edges")
    ap.add_argument("--check", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = _FULL
    if args.users:
        s = dataclasses.replace(s, max_users=args.users)
    if args.base_epochs:
        s = dataclasses.replace(s, base_epochs=args.base_epochs)
    rows: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        # every fine-tuning arm: ft_epochs full passes over the remaining edges
        full = dataclasses.replace(s, ft_epochs=args.ft_epochs, ft_steps=10**6)
        arms = {
            "ft reference": finetune_config(full, seed, select="gap", check_every=0),
            "ft guarded": finetune_config(full, seed, check_every=args.check, recall_tolerance=0.0),
            "ft guarded tol 5%": finetune_config(
                full, seed, check_every=args.check, recall_tolerance=0.05
            ),
            "ft guarded e0 3e-4": finetune_config(
                full,
                seed,
                check_every=args.check,
                trainable=("e0",),
                lr=3e-4,
                recall_tolerance=0.0,
            ),
        }
        out = run_arms(s, seed, args.attack, arms)
        gold = out.results["retrain"]["recall"]
        g = out.graph
        print(
            f"\nseed {seed}: {g.name}, {g.num_users} users, {g.num_items} items, "
            f"{out.clean.train.size(1)} train edges + {out.fake.size(1)} {args.attack} fakes; "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        for name, ft in out.finetunes.items():
            print(
                f"  {name}: steps {ft.steps}\n    gaps {[round(x, 3) for x in ft.gaps]}\n"
                f"    held-out recall {[round(x, 4) for x in ft.val_recalls]}; kept "
                f"{ft.selected_step}",
                flush=True,
            )
        for m, r in out.results.items():
            r = {**r, "rel": (r["recall"] / gold - 1) * 100}
            rows.setdefault(m, []).append(r)
            print(
                f"  {m:22s} fake {r['forgotten']:7.3f}  non-edge {r['negatives']:6.3f}  "
                f"R@20 {r['recall']:.4f} ({r['rel']:+.1f}%)  NDCG@20 {r['ndcg']:.4f}  "
                f"{r['seconds']:.2f}s  kept step {int(r.get('selected_step', -1))}",
                flush=True,
            )

    def ms(vals: list[float], fmt: str) -> str:
        if len(vals) == 1:
            return format(vals[0], fmt)
        return f"{format(statistics.mean(vals), fmt)} +- {format(statistics.stdev(vals), fmt)}"

    print(f"\nmean +- std over seeds {args.seeds} ({args.attack} fakes)")
    print("| method | fake score | non-edge score | Recall@20 | vs retrain | NDCG@20 | s |")
    print("|---|---|---|---|---|---|---|")
    for m, rs in rows.items():
        print(
            f"| {m} | {ms([r['forgotten'] for r in rs], '.3f')} | "
            f"{ms([r['negatives'] for r in rs], '.3f')} | {ms([r['recall'] for r in rs], '.4f')} | "
            f"{ms([r['rel'] for r in rs], '+.1f')}% | {ms([r['ndcg'] for r in rs], '.4f')} | "
            f"{ms([r['seconds'] for r in rs], '.2f')} |"
        )


if __name__ == "__main__":
    main()
