import re

import numpy as np
import pytest
import torch

from trainforge_core import data


def test_kjv_documents_are_the_whole_bible():
    docs = data.kjv_documents()
    assert len(docs) == 1189  # chapters in the Protestant canon
    assert docs[0].book == "Genesis" and docs[0].chapter == 1
    assert docs[0].text.startswith("In the beginning God created")
    assert docs[-1].book == "Revelation" and docs[-1].testament == "New"
    assert not any(re.search(r"\b\d+:\d+ ", d.text) for d in docs)  # verse numbers stripped
    assert 4_000_000 < sum(len(d.text) for d in docs) < 4_600_000


def test_split_is_disjoint_and_interleaved():
    train, held = data.kjv_split("train"), data.kjv_split("eval")
    assert len(train) + len(held) == 1189
    assert not {(d.book, d.chapter) for d in train} & {(d.book, d.chapter) for d in held}
    assert len({d.book for d in held}) > 30  # spread over the whole corpus
    with pytest.raises(ValueError, match="split"):
        data.kjv_split("test")


def test_tokenizer_round_trips_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINFORGE_CACHE", str(tmp_path))
    tok = data.kjv_tokenizer(300)
    assert tok.get_vocab_size() == 300
    assert [tok.token_to_id(t) for t in data.SPECIAL_TOKENS] == [0, 1, 2]
    text = "And God said, Let there be light: and there was light. ÆØ"
    assert tok.decode(tok.encode(text).ids) == text
    assert (tmp_path / "kjv-bpe-v1-300.json").exists()
    assert data.kjv_tokenizer(300).to_str() == tok.to_str()
    with pytest.raises(ValueError, match="vocab_size"):
        data.kjv_tokenizer(10)


def test_hf_tokenizer_has_special_tokens():
    tok = data.kjv_hf_tokenizer(2048)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)


def test_lm_data_batches():
    d = data.kjv_lm_data(2048)
    assert d.train.dtype == torch.int64 and d.train.numel() > 15 * d.eval.numel()
    assert int(d.train.max()) < d.vocab_size
    g = torch.Generator().manual_seed(0)
    x = d.sample_batch(4, 32, g)
    assert x.shape == (4, 32)
    # windows are contiguous slices of the stream
    start = int((d.train.unfold(0, 32, 1) == x[0]).all(1).nonzero()[0])
    assert torch.equal(d.train[start : start + 32], x[0])
    assert torch.equal(x, d.sample_batch(4, 32, torch.Generator().manual_seed(0)))
    evals = list(d.eval_batches(8, 64, max_batches=3))
    assert len(evals) == 3 and torch.equal(evals[0][1], d.eval[64:128])
    assert all(torch.equal(a, b) for a, b in zip(evals, d.eval_batches(8, 64, 3), strict=True))


@pytest.mark.parametrize(
    ("b", "s", "match"), [(0, 8, "batch_size"), (2, -1, "seq_len"), (2, 10**7, "does not fit")]
)
def test_lm_data_bad_windows(b, s, match):
    with pytest.raises(ValueError, match=match):
        data.kjv_lm_data(2048).sample_batch(b, s)
    with pytest.raises(ValueError, match="max_batches"):
        next(data.kjv_lm_data(2048).eval_batches(2, 8, max_batches=0))


def test_tmy3_hourly_weather():
    assert data.tmy3_stations() == ["703165TY", "723170TYA"]
    values, names = data.load_tmy3("723170TYA")
    assert values.shape == (8760, 8) and values.dtype == np.float32
    assert names == list(data.TMY3_CHANNELS)
    assert not np.isnan(values).any()
    temp = values[:, names.index("temp_air")]
    assert temp[4000:5000].mean() > temp[:1000].mean() + 10  # summer is warmer (NC)
    ghi = values[:, names.index("ghi")]
    assert ghi[:5].max() == 0 and ghi[10:16].min() > 0  # dark at 1-5am, sun at noon
    with pytest.raises(ValueError, match="station"):
        data.load_tmy3("nowhere")


def test_missing_optional_package_names_extra(monkeypatch):
    import importlib

    from trainforge_core import MissingOptionalDependency
    from trainforge_core._optional import require

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "tokenizers":
            raise ImportError("no")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(MissingOptionalDependency, match=r"pip install 'trainforge-core\[text\]'"):
        require("tokenizers", extra="text")
