"""Accuracy effect of ``rank_multiple`` (ranks rounded down to a multiple; not in the
reference) at ratio 3 in the full demo's setting, at equal steps.

Per seed: the demo's teacher (timm ViT, 8x8 digits, width 64, depth 4, 1,000 steps), then
for each ``rank_multiple`` the student at ratio 3 (SVD init), recovered 300 AdamW steps at
batch 64 on the same batches with PELA (CE + per-block feature MSE, the DeiT script's
alpha 1, beta 0, lambda 0) and with plain fine-tuning (CE). Reports parameters, test
accuracy right after the SVD and after recovery, and the logit MSE to the teacher.

    uv run python packages/pela/benchmarks/rank_multiple_accuracy.py [--seeds 0 1 2] \
        [--multiples 1 8 16] [--ratio 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch

from trainforge_core.surgery import count_parameters
from trainforge_pela import PELALoss, apply_pela, pela_pretrain
from trainforge_pela.data import digits, tiny_vit
from trainforge_pela.demo import _FULL, _batches, _evaluate, _train_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--ratio", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = _FULL
    rows: dict[tuple[int, str], list[tuple[float, float]]] = {}
    info: dict[int, tuple[int, str, list[float]]] = {}
    for seed in args.seeds:
        x_tr, y_tr, x_te, y_te = digits(seed=seed)
        teacher = tiny_vit(patch_size=4, seed=seed)
        _train_teacher(
            teacher,
            _batches(x_tr, y_tr, s.teacher_steps, s.batch_size, seed),
            s.teacher_steps,
            s.teacher_lr,
        )
        teacher.eval()
        t_acc, _, t_logits = _evaluate(teacher, x_te, y_te, None)
        recover = _batches(x_tr, y_tr, s.recover_steps, s.batch_size, seed + 1)
        print(f"seed {seed}: teacher accuracy {t_acc:.3f}", flush=True)
        for k in args.multiples:
            student0 = copy.deepcopy(teacher)
            rep = apply_pela(student0, args.ratio, rank_multiple=k)
            svd_acc, svd_mse, _ = _evaluate(student0, x_te, y_te, t_logits)
            ranks = ", ".join(str(c.rank) for c in rep.layers[:4])
            info.setdefault(k, (count_parameters(student0), ranks, []))[2].append(svd_acc)
            for arm, alpha in (("fine-tune", 0.0), ("PELA", 1.0)):
                student = copy.deepcopy(student0)
                with PELALoss(teacher, student, alpha=alpha, beta=0.0, lam=0.0) as loss_fn:
                    pela_pretrain(
                        loss_fn,
                        recover,
                        s.recover_steps,
                        lr=s.recover_lr,
                        warmup_steps=max(1, s.recover_steps // 20),
                    )
                acc, mse, _ = _evaluate(student, x_te, y_te, t_logits)
                rows.setdefault((k, arm), []).append((acc, mse))
                print(
                    f"  rank_multiple {k} (ranks {ranks}): SVD acc {svd_acc:.3f} "
                    f"(logit MSE {svd_mse:.3f}); {arm}: acc {acc:.3f}, logit MSE {mse:.3f}",
                    flush=True,
                )

    def ms(v: list[float], fmt: str) -> str:
        if len(v) < 2:
            return format(v[0], fmt)
        return f"{format(statistics.mean(v), fmt)} ± {format(statistics.stdev(v), fmt)}"

    print(
        f"\nRatio {args.ratio:g}, seeds {args.seeds} (mean ± sd); "
        f"{s.recover_steps} recovery steps, batch {s.batch_size}"
    )
    print(
        "| rank_multiple | ranks (qkv, proj, fc1, fc2) | params | SVD-only acc | "
        "fine-tune acc | PELA acc | fine-tune logit MSE | PELA logit MSE |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k in args.multiples:
        n, ranks, svd = info[k]
        ft, pe = rows[(k, "fine-tune")], rows[(k, "PELA")]
        print(
            f"| {k} | {ranks} | {n:,} | {ms(svd, '.3f')} | {ms([a for a, _ in ft], '.3f')} | "
            f"{ms([a for a, _ in pe], '.3f')} | {ms([m for _, m in ft], '.3f')} | "
            f"{ms([m for _, m in pe], '.3f')} |"
        )


if __name__ == "__main__":
    main()
