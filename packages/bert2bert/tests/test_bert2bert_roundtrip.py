"""The grown model is an ordinary transformers model: save / load round trips are exact."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainforge_bert2bert import bert2bert

sys.path.insert(0, str(Path(__file__).parent))
from bert2bert_tiny import CLASSES, config, ids, model


@pytest.mark.parametrize("arch", ["bert", "roberta", "gpt2", "llama"])
@pytest.mark.parametrize("untie", [True, False])
def test_save_pretrained_from_pretrained_exact(arch, untie, tmp_path):
    small = model(arch, 32, 4, 64, 2)
    big = bert2bert(small, config(arch, 48, 6, 96, 3), "aki", untie_lm_head=untie).eval()
    big.save_pretrained(tmp_path)
    loaded = CLASSES[arch].from_pretrained(tmp_path).eval()
    assert loaded.config.tie_word_embeddings == (not untie)
    a, b = big.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = ids()
    with torch.no_grad():
        assert torch.equal(big(input_ids=x).logits, loaded(input_ids=x).logits)


def test_state_dict_safetensors_round_trip(tmp_path):
    small = model("gpt2", 32, 4, 64, 2)
    big = bert2bert(small, config("gpt2", 64, 8, 128, 4), "fpi")
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, str(path))
    fresh = CLASSES["gpt2"](big.config)
    fresh.load_state_dict(load_file(str(path)), strict=True)
    x = ids()
    with torch.no_grad():
        assert torch.equal(big.eval()(input_ids=x).logits, fresh.eval()(input_ids=x).logits)
