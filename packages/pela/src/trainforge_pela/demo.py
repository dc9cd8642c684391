"""`trainforge demo pela`: compress a small timm ViT trained on real handwritten digits at
ratios 2 and 3, then recover it with PELA distillation vs plain fine-tuning at equal steps.

The teacher is a timm ``VisionTransformer`` (8x8 images, patch 4, width 64, depth 4)
trained on scikit-learn's digits (1,347 train / 450 test). Each compressed student starts
from the truncated-SVD initialisation and gets the same optimiser, schedule, batches and
number of steps in both arms; only the loss differs: PELA (task CE + per-block feature
MSE, the DeiT script's ``α = 1, β = 0, λ = 0``) or CE alone.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from trainforge_core.bench import median_time
from trainforge_core.report import DemoReport
from trainforge_core.surgery import count_parameters
from trainforge_core.technique import Technique
from trainforge_pela.data import digits, tiny_vit
from trainforge_pela.distill import PELALoss
from trainforge_pela.lowrank import apply_pela
from trainforge_pela.train import param_groups, pela_pretrain, warmup_cosine

CLAIM = (
    "Low-rank factorising a pre-trained ViT's Linear layers (SVD init) and recovering it with "
    "a short intermediate pre-training that distils every block's features from the "
    "original model keeps accuracy within about 0.6 points at 1/3 to 2/3 of the parameters."
)


@dataclass(frozen=True)
class _Setup:
    teacher_steps: int
    teacher_lr: float
    recover_steps: int
    recover_lr: float
    batch_size: int
    ratios: tuple[float, ...]


_QUICK = _Setup(250, 3e-3, 40, 3e-4, 32, (2.0, 3.0))
_FULL = _Setup(1000, 3e-3, 300, 3e-4, 64, (2.0, 3.0))


def _batches(x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=g)
        out.append((x[idx], y[idx]))
    return out


@torch.no_grad()
def _evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor | None):
    model.eval()
    logits = model(x)
    acc = (logits.argmax(-1) == y).float().mean().item()
    mse = F.mse_loss(logits, ref).item() if ref is not None else 0.0
    return acc, mse, logits


def _train_teacher(model: torch.nn.Module, batches, steps: int, lr: float) -> None:
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(steps, max(1, steps // 20), lr, 1e-6, 1e-5)
    )
    model.train()
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def run_demo(quick: bool, out_dir: Path | None, seed: int) -> DemoReport:
    s = _QUICK if quick else _FULL
    x_tr, y_tr, x_te, y_te = digits(seed=seed)
    teacher = tiny_vit(patch_size=4, seed=seed)
    start = time.process_time()
    _train_teacher(
        teacher,
        _batches(x_tr, y_tr, s.teacher_steps, s.batch_size, seed),
        s.teacher_steps,
        s.teacher_lr,
    )
    teacher_cpu = time.process_time() - start
    teacher.eval()
    t_acc, _, t_logits = _evaluate(teacher, x_te, y_te, None)
    n_teacher = count_parameters(teacher)
    bench_x = x_te[:256]
    reps = 3 if quick else 7
    t_lat = median_time(lambda: teacher(bench_x), warmup=1, repeats=reps).median

    report = DemoReport(
        slug="pela", claim=CLAIM, baseline_name="plain fine-tune", technique_name="PELA"
    )
    results: dict[float, dict[str, float]] = {}
    recover = _batches(x_tr, y_tr, s.recover_steps, s.batch_size, seed + 1)
    for ratio in s.ratios:
        student0 = copy.deepcopy(teacher)
        comp = apply_pela(student0, ratio)
        svd_acc, svd_mse, _ = _evaluate(student0, x_te, y_te, t_logits)
        res = {"params": comp.params_after, "svd_acc": svd_acc, "svd_mse": svd_mse}
        for arm, alpha in (("ft", 0.0), ("pela", 1.0)):
            student = copy.deepcopy(student0)
            # DeiT script: alpha 1, beta 0, no weight regulariser; the baseline keeps only CE.
            with PELALoss(teacher, student, alpha=alpha, beta=0.0, lam=0.0) as loss_fn:
                c0 = time.process_time()
                hist = pela_pretrain(
                    loss_fn,
                    recover,
                    s.recover_steps,
                    lr=s.recover_lr,
                    warmup_steps=max(1, s.recover_steps // 20),
                )
                res[f"{arm}_cpu"] = time.process_time() - c0
            res[f"{arm}_fd"] = hist.history["fd"][-1]
            res[f"{arm}_acc"], res[f"{arm}_mse"], _ = _evaluate(student, x_te, y_te, t_logits)
            if arm == "pela":
                res["latency"] = median_time(
                    lambda m=student: m(bench_x), warmup=2, repeats=7
                ).median
        results[ratio] = res

    for ratio, r in results.items():
        report.add(f"test accuracy at ratio {ratio:g}", r["ft_acc"], r["pela_acc"], better="higher")
    for ratio, r in results.items():
        report.add(f"logit MSE to teacher at ratio {ratio:g}", r["ft_mse"], r["pela_mse"])
    for ratio, r in results.items():
        report.add(f"block-feature MSE to teacher at ratio {ratio:g}", r["ft_fd"], r["pela_fd"])
    for ratio, r in results.items():
        report.add(
            f"parameters: original vs ratio {ratio:g}", n_teacher, r["params"], better="lower"
        )
    for ratio, r in results.items():
        report.add(
            f"CPU latency, 256 images: original vs ratio {ratio:g}",
            1e3 * t_lat,
            1e3 * r["latency"],
            "ms",
        )

    xs = [float(n_teacher)] + [float(results[r]["params"]) for r in s.ratios]
    for label, key in (
        ("SVD only", "svd_acc"),
        ("plain fine-tune", "ft_acc"),
        ("PELA", "pela_acc"),
    ):
        report.add_curve(
            label, xs, [t_acc] + [results[r][key] for r in s.ratios], "test accuracy", "parameters"
        )

    gaps = {r: results[r]["pela_acc"] - results[r]["ft_acc"] for r in s.ratios}
    wins = [r for r, g in gaps.items() if g > 0]
    report.notes += [
        f"Teacher: timm VisionTransformer (8x8 px, patch 4, width 64, depth 4, {n_teacher:,} "
        f"params) trained {s.teacher_steps} steps on scikit-learn digits (1,347 train / 450 "
        f"test images): test accuracy {t_acc:.3f} ({teacher_cpu:.1f} s CPU).",
        "Students: every block Linear (qkv, proj, fc1, fc2) replaced at rank "
        "floor(mn / (ratio (m+n))) from a truncated SVD; head and patch embedding kept. "
        + "; ".join(
            f"ratio {r:g}: {results[r]['params']:,} params, accuracy right after SVD "
            f"{results[r]['svd_acc']:.3f}"
            for r in s.ratios
        )
        + ".",
        f"Recovery: {s.recover_steps} AdamW steps (lr {s.recover_lr:g}, wd 0.05, warm-up + "
        f"cosine), batch {s.batch_size}, the same batches in both arms. PELA = CE + per-block "
        "feature MSE (alpha 1, beta 0, lambda 0: DeiT/scripts/train_base.sh); plain fine-tune = "
        "CE only. A PELA step also runs the teacher forward (CPU s: "
        + ", ".join(
            f"ratio {r:g} PELA {results[r]['pela_cpu']:.1f} vs fine-tune {results[r]['ft_cpu']:.1f}"
            for r in s.ratios
        )
        + ").",
        (
            "PELA beat plain fine-tuning in test accuracy at every ratio"
            if len(wins) == len(gaps)
            else "PELA did not beat plain fine-tuning in test accuracy at every ratio here"
        )
        + f" (PELA - fine-tune: {', '.join(f'{r:g}: {g:+.3f}' for r, g in gaps.items())}).",
        f"Latency: median of {reps} forward passes on 256 test images, CPU, this process's threads "
        "(noisy on a shared machine; see the README's benchmark for ViT-B sizes).",
        "At this toy scale the SVD initialisation alone keeps most of the teacher's accuracy "
        f"(teacher {t_acc:.3f}; after SVD "
        + ", ".join(f"ratio {r:g}: {results[r]['svd_acc']:.3f}" for r in s.ratios)
        + "), so the recovery arms are compared with each other, not with a large drop.",
        f"One seed ({seed}); a toy scale on 8x8 digits, not ImageNet.",
    ]
    report.details.update(teacher_accuracy=t_acc, teacher_params=n_teacher, results=results)
    return report


TECHNIQUE = Technique.from_package("trainforge_pela", run_demo)
