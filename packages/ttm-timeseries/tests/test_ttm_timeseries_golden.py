"""Same weights, same outputs as granite-tsfm 0.3.11, without granite-tsfm installed.

``golden/tsfm_golden.*`` holds granite-tsfm's own forward outputs (forecast and loss) on six
tiny random-weight models covering adaptive patching, observed masks, resolution prefix
tuning, mix-channel decoders with raw residual and static categoricals, forecast channel
mixing with exogenous channels and prediction filtering, self-attention with positional
encoding, mean/no scaling and the four losses. The config dicts are the reference's own
``to_dict()`` (loaded through :meth:`TTMConfig.from_tsfm_dict`) and the weights are its
``state_dict()`` (loaded through :func:`load_tsfm_state_dict`). Regenerate with
``golden/make_tsfm_golden.py`` (needs granite-tsfm; see its header).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainforge_ttm_timeseries import TTMConfig, TTMForPrediction, load_tsfm_state_dict

GOLDEN = Path(__file__).resolve().parent / "golden"
META = json.loads((GOLDEN / "tsfm_golden.json").read_text())
TENSORS = load_file(str(GOLDEN / "tsfm_golden.safetensors"))
_spec = importlib.util.spec_from_file_location("tsfm_golden_spec", GOLDEN / "tsfm_golden_spec.py")
SPEC = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(SPEC)


def case_weights(name: str) -> dict[str, torch.Tensor]:
    """The reference's state_dict of a case, regenerated from its names, shapes and seed."""
    case = META["cases"][name]
    return SPEC.golden_weights(case["state_shapes"], case["weight_seed"])


def run_case(name: str):
    """Our model on a golden case: (our output, the reference's recorded outputs)."""
    case = META["cases"][name]
    prefix = f"{name}/"
    state = case_weights(name)
    inputs = {k: TENSORS[f"{prefix}input/{k}"] for k in case["inputs"]}
    ref = {k: TENSORS[f"{prefix}output/{k}"] for k in ("prediction_outputs", "loss")}
    model = TTMForPrediction(TTMConfig.from_tsfm_dict(case["config"])).eval()
    load_tsfm_state_dict(model, state)  # strict: every reference name maps onto ours
    with torch.no_grad():
        out = model(**inputs)
    return out, ref


def test_golden_covers_the_cases_and_weights_regenerate():
    assert META["granite_tsfm"] == "0.3.11"
    assert sorted(META["cases"]) == sorted(SPEC.CASES)
    for name, case in META["cases"].items():  # the seeded weights are the ones recorded
        got = sum(float(w.double().abs().sum()) for w in case_weights(name).values())
        assert got == pytest.approx(case["weight_checksum"], rel=1e-12), name
    # The dicts are verbatim 0.3.11 config dicts: they carry the options this package lacks.
    assert all("decompose" in c["config"] for c in META["cases"].values())


@pytest.mark.parametrize("name", sorted(META["cases"]))
def test_equals_granite_tsfm_golden(name):
    out, ref = run_case(name)
    assert out.prediction_outputs.shape == ref["prediction_outputs"].shape
    # float32 rounding only: our patch mixer sums in another order (left GEMM on
    # patch-major storage); observed differences are stated in the README.
    torch.testing.assert_close(
        out.prediction_outputs, ref["prediction_outputs"], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(out.loss.reshape(1), ref["loss"], rtol=1e-5, atol=1e-6)


def test_golden_detects_a_changed_weight():
    # The comparison can fail: one perturbed reference weight moves the forecast.
    name = "base_masked"
    _, ref = run_case(name)
    state = case_weights(name)
    key = next(k for k in sorted(state) if "norm" in k and k.endswith("weight"))
    state[key] = state[key] + 0.05
    case = META["cases"][name]
    model = TTMForPrediction(TTMConfig.from_tsfm_dict(case["config"])).eval()
    load_tsfm_state_dict(model, state)
    inputs = {k: TENSORS[f"{name}/input/{k}"] for k in case["inputs"]}
    with torch.no_grad():
        bumped = model(**inputs).prediction_outputs
    assert (bumped - ref["prediction_outputs"]).abs().max() > 1e-3
