"""Regenerate ``tsfm_golden.safetensors`` / ``tsfm_golden.json``: granite-tsfm's own outputs on
tiny random-weight TinyTimeMixer models, so ``test_ttm_timeseries_golden.py`` compares this
package with the reference in CI without granite-tsfm installed.

granite-tsfm cannot be a test dependency of this package: 0.3.11 pins ``torch<2.12`` and
``scikit-learn<1.8``, below the workspace's resolution. Run this script once by hand where
granite-tsfm imports (any environment with ``granite-tsfm==0.3.11`` and torch), then commit
both outputs:

    python packages/ttm-timeseries/tests/golden/make_tsfm_golden.py

How the committed fixture was made (2026-12-05): granite-tsfm 0.3.11 and the pure-Python
packages it imports installed beside the workspace's torch 2.15 (outside its torch pin; the
model code is plain torch), transformers 4.57.6 shadowing the workspace's 5.x:

    uv pip install --python .venv/bin/python --target /tmp/tsfm --no-deps \
        granite-tsfm==0.3.11 transformers==4.57.6 "huggingface-hub<1.0" "tokenizers<0.23" \
        datasets==4.4.1 deprecated einops dill multiprocess pyarrow wrapt httpx httpcore \
        h11 anyio sniffio
    PYTHONPATH=/tmp/tsfm .venv/bin/python packages/ttm-timeseries/tests/golden/make_tsfm_golden.py

Nothing is downloaded: every model is built from a config in ``tsfm_golden_spec.py``, with
seeded random weights generated from the reference's own parameter names and shapes (norm
weights not left at one, biases not at zero, so a wrongly mapped parameter shows in the
outputs); the fixture stores the names, shapes, seed and a checksum, not the weights. The
script prints how far this package is from the reference when it is importable too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tsfm_golden_spec import BASE, CASES, case_inputs, golden_weights  # noqa: E402


def main() -> None:
    import tsfm_public
    from tsfm_public.models.tinytimemixer import TinyTimeMixerConfig, TinyTimeMixerForPrediction

    version = getattr(tsfm_public, "__version__", None)
    if version is None:
        from importlib.metadata import version as _v

        version = _v("granite-tsfm")
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {
        "granite_tsfm": version,
        "torch": torch.__version__,
        "generator": "tests/golden/make_tsfm_golden.py",
        "cases": {},
    }
    for seed, (name, overrides) in enumerate(sorted(CASES.items())):
        cfg = {**BASE, **overrides}
        ref = TinyTimeMixerForPrediction(TinyTimeMixerConfig(**cfg)).eval()
        shapes = {k: list(v.shape) for k, v in ref.state_dict().items()}
        weights = golden_weights(shapes, 1000 + seed)
        ref.load_state_dict(weights, strict=True)
        inputs = case_inputs(name, cfg, seed)
        with torch.no_grad():
            out = ref(**inputs)
        cfg_dict = {
            k: v
            for k, v in ref.config.to_dict().items()
            if isinstance(v, (int, float, str, bool, list, type(None)))
        }
        meta["cases"][name] = {
            "config": cfg_dict,
            "inputs": sorted(inputs),
            "weight_seed": 1000 + seed,
            "state_shapes": shapes,
            "weight_checksum": sum(float(w.double().abs().sum()) for w in weights.values()),
        }
        for k, v in inputs.items():
            tensors[f"{name}/input/{k}"] = v.contiguous()
        tensors[f"{name}/output/prediction_outputs"] = out.prediction_outputs.contiguous()
        tensors[f"{name}/output/loss"] = out.loss.reshape(1).contiguous()
    save_file(tensors, str(HERE / "tsfm_golden.safetensors"))
    (HERE / "tsfm_golden.json").write_text(
        json.dumps(meta, sort_keys=True, separators=(",", ":")) + "\n"
    )
    print(f"wrote {len(tensors)} tensors for {len(CASES)} cases (granite-tsfm {version})")

    try:  # how far this package is from the reference (informative)
        sys.path.insert(0, str(HERE.parent))
        from test_ttm_timeseries_golden import run_case
    except ImportError:
        return
    for name in sorted(CASES):
        ours, ref_out = run_case(name)
        diff = (ours.prediction_outputs - ref_out["prediction_outputs"]).abs().max().item()
        print(f"{name}: max |ours - granite-tsfm| = {diff:.2e}")


if __name__ == "__main__":
    main()
