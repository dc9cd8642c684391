"""Few-shot fine-tuning with the reference recipe on ``transformers.Trainer`` under DDP: two
gloo ranks with half the per-device batch equal one process at the same global batch (loss
trajectory, validation losses and final parameters), and the README's torchrun script runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from trainforge_core.distributed import run_on_ranks

pytestmark = pytest.mark.distributed

GLOBAL_BATCH = 8


def _fewshot(rank: int, world_size: int, out_dir: str) -> dict:
    from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction
    from trainforge_ttm_timeseries.finetune import fewshot_trainer
    from trainforge_ttm_timeseries.pretraining import ForecastWindows, finetune_recipe

    torch.manual_seed(0)
    cfg = TTMConfig(
        context_length=32, patch_length=4, prediction_length=8, num_input_channels=2,
        d_model=8, num_layers=1, decoder_num_layers=1, dropout=0.0, head_dropout=0.0,
    )  # fmt: skip
    model = TTMForPrediction(cfg).double()
    finetune_recipe(model, num_input_channels=2, decoder_mode="mix_channel")
    gen = torch.Generator().manual_seed(1)
    series = torch.randn(200, 2, generator=gen, dtype=torch.float64).cumsum(0).numpy()
    train = ForecastWindows(series[:145], 32, 8, stride=7)  # 16 windows
    valid = ForecastWindows(series[120:], 32, 8, stride=8)  # 6 windows, later horizons
    assert len(train) == 16
    trainer = fewshot_trainer(
        model, train, valid, out_dir,
        learning_rate=1e-2, num_train_epochs=3,
        per_device_train_batch_size=GLOBAL_BATCH // world_size,
        per_device_eval_batch_size=3, disable_tqdm=True, dataloader_drop_last=False,
    )  # fmt: skip
    trainer.train()
    logs = trainer.state.log_history
    return {
        "train_loss": [h["loss"] for h in logs if "loss" in h],
        "eval_loss": [h["eval_loss"] for h in logs if "eval_loss" in h],
        "steps": trainer.state.global_step,
        "params": {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad},
        "frozen_moved": any(
            not torch.equal(p, q)
            for p, q in zip(model.backbone.parameters(), _backbone_at_init(cfg), strict=True)
        ),
    }


def _backbone_at_init(cfg):
    from trainforge_ttm_timeseries import TTMForPrediction

    torch.manual_seed(0)
    return [p.double() for p in TTMForPrediction(cfg).backbone.parameters()]


def test_ddp_two_ranks_equal_one_process_at_the_same_global_batch():
    with tempfile.TemporaryDirectory() as one_dir, tempfile.TemporaryDirectory() as ddp_dir:
        (single,) = run_on_ranks(_fewshot, 1, one_dir, timeout=600)
        ranks = run_on_ranks(_fewshot, 2, ddp_dir, timeout=600)
    assert single["steps"] == 3 * 16 // GLOBAL_BATCH == ranks[0]["steps"]
    assert len(single["eval_loss"]) == 3 and not single["frozen_moved"]
    # The run learns (so equality is not between two runs that did nothing).
    assert single["eval_loss"][-1] < single["eval_loss"][0]
    for r in ranks:
        assert not r["frozen_moved"]
        # The Trainer accumulates the losses it logs in float32: equal to float32 rounding.
        torch.testing.assert_close(r["train_loss"], single["train_loss"], rtol=1e-6, atol=0)
        torch.testing.assert_close(r["eval_loss"], single["eval_loss"], rtol=1e-6, atol=0)
        # The model is float64; only the reduction order differs (two per-rank means
        # all-reduced against one mean over the global batch).
        assert r["params"].keys() == single["params"].keys()
        for k in single["params"]:
            torch.testing.assert_close(r["params"][k], single["params"][k], rtol=1e-9, atol=1e-12)


def test_readme_scaling_out_script_runs_under_torchrun(tmp_path):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Scaling out", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    command = re.search(r"```bash\n(torchrun .*?)\n```", section, flags=re.S).group(1)
    assert command.startswith("torchrun --nproc-per-node 2 fewshot_ddp.py")
    (tmp_path / "fewshot_ddp.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    args = command.split()[1:]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test loss" in proc.stdout


def _free_port() -> int:
    from trainforge_core.distributed import free_port

    return free_port()
