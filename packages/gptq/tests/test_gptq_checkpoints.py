"""Checkpoints: save_pretrained / from_pretrained of a quantized transformers model, loading
GPTQModel / AutoGPTQ checkpoints (v1 "gptq" and "gptq_v2", written here in their layouts
with an independent packer), and the settings other loaders refuse."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from trainforge_core.models import tiny_llama
from trainforge_gptq import (
    GPTQConfig,
    GPTQLinear,
    check_portable_group_size,
    load_quantized,
    quantize_model,
    read_checkpoint_config,
    register_quantizer,
    save_quantized,
)

V, H = 128, 64


def _llama(seed=0):
    return tiny_llama(seed=seed, vocab_size=V, hidden_size=H, num_layers=1, num_heads=4).eval()


def _ids(n=8, seq=16, seed=0):
    return torch.randint(0, V, (n, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def quantized():
    q, _ = quantize_model(_llama(), _ids(), GPTQConfig(bits=4, group_size=32), progress=False)
    return q


def test_save_pretrained_from_pretrained_round_trip(quantized, tmp_path):
    # save_pretrained used to drop the quantization: from_pretrained rebuilt plain random linears
    from transformers import AutoModelForCausalLM

    quantized.save_pretrained(tmp_path / "a")
    qc = json.loads((tmp_path / "a" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 32
    assert qc["checkpoint_format"] == "gptq" and qc["sym"] is True and qc["desc_act"] is False
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    assert isinstance(loaded.model.layers[0].mlp.down_proj, GPTQLinear)
    x = _ids(2, 10, seed=1)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, quantized(x).logits)
    # the loaded model saves again (save_pretrained and save_quantized) and reloads equal
    loaded.save_pretrained(tmp_path / "b")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    save_quantized(loaded, tmp_path / "c")
    third = load_quantized(_llama(seed=3), tmp_path / "c")
    with torch.no_grad():
        assert torch.equal(again(x).logits, quantized(x).logits)
        assert torch.equal(third(x).logits, quantized(x).logits)


def test_gpt2_conv1d_model_round_trips_through_from_pretrained(tmp_path):
    # GPT-2's _init_weights reaches into c_proj.weight, which a GPTQLinear does not have
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=32, n_embd=64, n_layer=1, n_head=4))
    q, _ = quantize_model(m.eval(), _ids(), GPTQConfig(bits=4, group_size=32), progress=False)
    q.save_pretrained(tmp_path / "g")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "g")
    assert isinstance(loaded.transformer.h[0].attn.c_proj, GPTQLinear)
    x = _ids(2, 10, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, q(x).logits)


def test_save_quantized_folder_loads_with_from_pretrained(quantized, tmp_path):
    from transformers import AutoModelForCausalLM

    save_quantized(quantized, tmp_path / "q")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    x = _ids(2, 10, seed=2)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, quantized(x).logits)


def test_import_registers_the_loader_once_transformers_loads():
    # a fresh process: importing trainforge_gptq must not import transformers' quantizers,
    # and from_pretrained (which imports them) must then find our loader
    import subprocess
    import sys

    code = (
        "import sys, trainforge_gptq\n"
        "assert 'transformers.quantizers.auto' not in sys.modules\n"
        "from transformers.quantizers import auto\n"
        "print(auto.AUTO_QUANTIZER_MAPPING['gptq'].__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from trainforge_gptq.hf import _gptqmodel_usable

    expected = "GptqHfQuantizer" if _gptqmodel_usable() else "TrainforgeGptqHfQuantizer"
    assert out.stdout.strip() == expected, out.stderr


def test_register_quantizer_is_idempotent_and_checks_its_argument():
    assert register_quantizer() in (True, False)
    assert register_quantizer(force=True) is True
    with pytest.raises(TypeError, match="force"):
        register_quantizer(force="yes")  # type: ignore[arg-type]


# ---- foreign checkpoints, written here in the GPTQModel / AutoGPTQ layouts ----


def _pack_cols(codes: np.ndarray) -> np.ndarray:
    """AutoGPTQ's 4-bit pack of [in, out] codes along the rows into int32 [in/8, out]."""
    rows, cols = codes.shape
    out = np.zeros((rows // 8, cols), dtype=np.uint32)
    for i in range(rows // 8):
        for j in range(8):
            out[i] |= codes[8 * i + j].astype(np.uint32) << np.uint32(4 * j)
    return out.view(np.int32)


def _pack_zeros(zeros: np.ndarray) -> np.ndarray:
    """4-bit pack of [groups, out] along the columns into int32 [groups, out/8]."""
    g, cols = zeros.shape
    out = np.zeros((g, cols // 8), dtype=np.uint32)
    for i in range(cols // 8):
        for j in range(8):
            out[:, i] |= zeros[:, 8 * i + j].astype(np.uint32) << np.uint32(4 * j)
    return out.view(np.int32)


def _foreign(tmp_path, fmt, layout, sym=False, seed=0, gs=32):
    """A random 4-bit GPTQ checkpoint of the 1-layer llama; returns (dir, float model)."""
    model = _llama()
    g = np.random.default_rng(seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ref = copy.deepcopy(model)
    for name, lin in list(model.named_modules()):
        if not (name.startswith("model.layers.") and isinstance(lin, torch.nn.Linear)):
            continue
        out_f, in_f = lin.weight.shape
        groups = in_f // gs
        codes = g.integers(0, 16, size=(in_f, out_f))
        zeros = np.full((groups, out_f), 8) if sym else g.integers(0, 16, size=(groups, out_f))
        scales = torch.from_numpy(g.uniform(0.001, 0.02, size=(groups, out_f))).half()
        gidx = np.arange(in_f) // gs
        w = (torch.from_numpy(codes - zeros[gidx]).double() * scales.double()[gidx]).t()
        ref.get_submodule(name).weight.data = w.float()
        stored = zeros - 1 if fmt == "gptq" else zeros
        del state[f"{name}.weight"]
        state[f"{name}.qweight"] = torch.from_numpy(_pack_cols(codes))
        state[f"{name}.qzeros"] = torch.from_numpy(_pack_zeros(stored & 15))
        state[f"{name}.scales"] = scales
        state[f"{name}.g_idx"] = torch.from_numpy(gidx.astype(np.int32))
    state.pop("lm_head.weight", None)  # tied to the embeddings, stored once
    if layout == "autogptq":  # g_idx is optional without act-order
        state = {k: v for k, v in state.items() if not k.endswith(".g_idx")}
    root = tmp_path / f"{layout}-{fmt}"
    root.mkdir()
    qcfg = {"bits": 4, "group_size": gs, "desc_act": False, "sym": sym, "damp_percent": 0.01}
    if layout == "gptqmodel":
        qcfg |= {"quant_method": "gptq", "checkpoint_format": fmt, "pack_dtype": "int32"}
        qcfg |= {"lm_head": False, "meta": {"quantizer": ["gptqmodel:5.0.0"]}}
        save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
        cfg = model.config.to_dict() | {"quantization_config": qcfg}
        (root / "config.json").write_text(json.dumps(cfg, default=str))
        (root / "quantize_config.json").write_text(json.dumps(qcfg))
    else:  # AutoGPTQ: quantize_config.json only, a named weights file, no format key
        qcfg |= {"static_groups": False, "true_sequential": True}
        qcfg |= {"model_file_base_name": "gptq_model-4bit-32g"}
        save_file(state, str(root / "gptq_model-4bit-32g.safetensors"), metadata={"format": "pt"})
        (root / "quantize_config.json").write_text(json.dumps(qcfg))
    return root, ref


@pytest.mark.parametrize(
    "fmt, layout, sym",
    [("gptq", "gptqmodel", True), ("gptq_v2", "gptqmodel", False), ("gptq", "autogptq", True)],
)
def test_loads_gptqmodel_and_autogptq_checkpoints(tmp_path, fmt, layout, sym):
    root, ref = _foreign(tmp_path, fmt, layout, sym)
    loaded = load_quantized(_llama(seed=7), root)
    lin = loaded.model.layers[0].self_attn.q_proj
    assert isinstance(lin, GPTQLinear) and lin.checkpoint_format == fmt
    torch.testing.assert_close(lin.dequantize(), ref.model.layers[0].self_attn.q_proj.weight)
    x = _ids(2, 10, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ref(x).logits, atol=1e-4, rtol=1e-4)


def test_gptqmodel_v2_checkpoint_through_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    root, ref = _foreign(tmp_path, "gptq_v2", "gptqmodel", sym=False, seed=1)
    loaded = AutoModelForCausalLM.from_pretrained(root)
    x = _ids(2, 10, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, ref(x).logits, atol=1e-4, rtol=1e-4)


def test_checkpoint_without_packed_layers_loads(tmp_path):
    # 3-bit packing needs multiples of 32; with hidden 48 no layer packs. load_quantized
    # used to need the private module list and refused such a folder.
    def make():
        return tiny_llama(seed=0, vocab_size=V, hidden_size=48, num_layers=1, num_heads=4).eval()

    q, rep = quantize_model(make(), _ids(), GPTQConfig(bits=3, group_size=16), progress=False)
    assert not any(r.packed for r in rep.layers)
    save_quantized(q, tmp_path / "ck")
    loaded = load_quantized(
        tiny_llama(seed=9, vocab_size=V, hidden_size=48, num_layers=1, num_heads=4).eval(),
        tmp_path / "ck",
    )
    x = _ids(2, 10, seed=6)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, q(x).logits)


def test_unportable_group_size_warns_but_round_trips(tmp_path):
    with pytest.warns(UserWarning, match="group_size=48 .* GPTQModel"):
        q, _ = quantize_model(_llama(), _ids(), GPTQConfig(bits=4, group_size=48), progress=False)
    with pytest.warns(UserWarning, match="group_size=48"):
        save_quantized(q, tmp_path / "g48")
    with pytest.warns(UserWarning, match="group_size=48"):
        loaded = load_quantized(_llama(seed=2), tmp_path / "g48")
    with torch.no_grad():
        assert torch.equal(loaded(_ids(1, 8)).logits, q(_ids(1, 8)).logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_model(_llama(), _ids(), GPTQConfig(bits=4, group_size=64), progress=False)


@pytest.mark.parametrize(
    "change, err, match",
    [
        ({"quant_method": "awq"}, ValueError, "quant_method='awq'"),
        ({"checkpoint_format": "marlin"}, ValueError, "checkpoint_format='marlin'"),
        ({"pack_dtype": "int16"}, ValueError, "pack_dtype='int16'"),
        ({"dynamic": {"-:.*mlp": {}}}, ValueError, "dynamic"),
        ({"bits": 5}, ValueError, "bits"),
        ({"group_size": 0}, ValueError, "group_size"),
        ({"sym": "no"}, TypeError, "sym"),
    ],
)
def test_unloadable_settings_are_refused(tmp_path, change, err, match):
    root, _ = _foreign(tmp_path, "gptq", "gptqmodel", True)
    qcfg = json.loads((root / "quantize_config.json").read_text()) | change
    (root / "quantize_config.json").write_text(json.dumps(qcfg))
    with pytest.raises(err, match=match):
        load_quantized(_llama(), root)


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="group_size"):
        check_portable_group_size("48")  # type: ignore[arg-type]
    assert check_portable_group_size(128) and check_portable_group_size(96, in_features=96)
    with pytest.raises(TypeError, match="dict"):
        read_checkpoint_config(["bits", 4])
    with pytest.raises(ValueError, match="no 'bits'"):
        read_checkpoint_config({"quant_method": "gptq"})
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        load_quantized(_llama(), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a GPTQ checkpoint"):
        load_quantized(_llama(), tmp_path / "empty")
    with pytest.raises(TypeError, match="nn.Module"):
        load_quantized("model", tmp_path)  # type: ignore[arg-type]
    root, _ = _foreign(tmp_path, "gptq", "gptqmodel", True)
    other = tiny_llama(seed=0, vocab_size=V, hidden_size=H, num_layers=1, num_heads=4)
    other.model.layers[0].mlp = torch.nn.Identity()
    with pytest.raises(ValueError, match="does not have"):
        load_quantized(other, root)
