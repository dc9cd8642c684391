from __future__ import annotations

import pytest
import torch

from trainforge_meco import (
    IGNORE_INDEX,
    MeCoCollator,
    MeCoFormatter,
    block_causal_mask,
    masked_lm_loss,
    pack_documents,
    restore_all_masked,
)


@pytest.fixture
def examples(char_tok):
    fmt = MeCoFormatter(char_tok)
    return [
        fmt(list(range(10, 15)), "https://a.com"),  # 1 + 12 meta + 5 + 1 = 19
        fmt(list(range(20, 23))),  # plain: 5
        fmt(list(range(30, 38)), "https://bb.org"),  # 1 + 13 + 8 + 1 = 23
    ]


def _segments(packed):
    """(row, start, end, doc) for every segment, from the boundaries."""
    out = []
    for r, bounds in enumerate(packed.boundaries):
        for a, b in bounds:
            out.append((r, a, b, int(packed.document_ids[r, a])))
    return out


def test_pad_strategy_keeps_every_token_label_and_boundary(examples) -> None:
    packed = pack_documents(examples, 32, "pad", pad_id=258)
    assert packed.input_ids.shape == (2, 32)
    segs = _segments(packed)
    assert [s[3] for s in segs] == [0, 1, 2]
    assert packed.boundaries == [[(0, 19), (19, 24)], [(0, 23)]]
    for (r, a, b, _doc), ex in zip(segs, examples, strict=True):
        assert packed.input_ids[r, a:b].tolist() == ex.input_ids.tolist()
        # the document's labels are kept; the segment's first label is masked (no
        # prediction across documents), which is already -100 (BOS) for formatted docs
        assert packed.labels[r, a:b].tolist() == ex.labels.tolist()
        assert packed.position_ids[r, a:b].tolist() == list(range(b - a))
    assert packed.input_ids[0, 24:].eq(258).all() and packed.labels[0, 24:].eq(IGNORE_INDEX).all()
    assert packed.segment_ids[0, 24:].eq(-1).all() and packed.document_ids[1, 23:].eq(-1).all()


def test_complete_strategy_truncates_the_overflowing_document(examples) -> None:
    packed = pack_documents(examples, 20, "complete", long_documents="truncate")
    # row 0: doc0 (19) + the first token of doc1; doc1's rest is discarded (pack_complete)
    assert packed.boundaries[0] == [(0, 19), (19, 20)]
    assert packed.boundaries[1] == [(0, 20)]  # doc2 truncated to 20 of 23
    assert packed.document_ids[1].eq(2).all()
    assert packed.input_ids[1].tolist() == examples[2].input_ids[:20].tolist()


def test_split_strategy_continues_documents_without_losing_tokens(examples) -> None:
    packed = pack_documents(examples, 23, "split", drop_last=False)
    real = packed.input_ids[packed.document_ids >= 0].tolist()
    assert real == torch.cat([e.input_ids for e in examples]).tolist()
    # the continuation of doc1 in row 1 restarts its positions and masks its first label
    assert packed.boundaries == [[(0, 19), (19, 23)], [(0, 1), (1, 23)], [(0, 1)]]
    assert packed.document_ids[1, 0] == 1 and packed.document_ids[1, 1] == 2
    assert packed.position_ids[1, :3].tolist() == [0, 0, 1]
    assert packed.labels[1, 0] == IGNORE_INDEX


def test_documents_longer_than_seq_len(examples) -> None:
    with pytest.raises(ValueError, match=r"example 2 has 23 tokens > seq_len=20"):
        pack_documents(examples, 20, "pad")
    truncated = pack_documents(examples, 20, "pad", long_documents="truncate")
    assert truncated.boundaries[-1] == [(0, 20)]
    split = pack_documents(examples, 20, "pad", long_documents="split")
    assert [d for *_, d in _segments(split)] == [0, 1, 2, 2]
    last = split.boundaries[-1][-1]
    assert last[1] - last[0] == 3


def test_all_masked_window_gets_the_reference_fallback(char_tok) -> None:
    fmt = MeCoFormatter(char_tok)
    long_meta = fmt(list(range(50, 60)), "https://averyveryverylonghostname.com")
    packed = pack_documents([long_meta], 24, long_documents="truncate")
    # the 24-token window holds only BOS + metadata: the reference restores the last 10 labels
    assert packed.fallback_rows == [0]
    row_labels, row_ids = packed.labels[0], packed.input_ids[0]
    assert (row_labels != IGNORE_INDEX).sum() == 10
    assert row_labels[-10:].tolist() == row_ids[-10:].tolist()
    assert torch.isfinite(masked_lm_loss(torch.randn(1, 24, 300), packed.labels))
    off = pack_documents([long_meta], 24, long_documents="truncate", restore_last=0)
    assert off.fallback_rows == [] and off.labels.eq(IGNORE_INDEX).all()


def test_restore_all_masked_skips_padding_and_segment_starts() -> None:
    ids = torch.arange(8)
    labels = torch.full((8,), IGNORE_INDEX)
    seg = torch.tensor([0, 0, 0, 1, 1, 1, -1, -1])
    restore_all_masked(labels, ids, seg, n=10)
    assert labels.tolist() == [IGNORE_INDEX, 1, 2, IGNORE_INDEX, 4, 5, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ValueError, match="same length"):
        restore_all_masked(labels, torch.arange(3))


def test_block_causal_mask_matches_a_loop() -> None:
    seg = torch.tensor([[0, 0, 1, 1, 1, -1], [0, 1, 2, 2, -1, -1]])
    mask = block_causal_mask(seg, torch.bool)
    for b in range(2):
        for q in range(6):
            for k in range(6):
                want = q == k or (k <= q and seg[b, q] == seg[b, k] and seg[b, q] >= 0)
                assert bool(mask[b, 0, q, k]) == want
    add = block_causal_mask(seg, torch.float32)
    assert torch.equal(add == 0, mask)
    assert add.min() == torch.finfo(torch.float32).min


def test_masked_loss_over_a_packed_batch_equals_hand_count(examples) -> None:
    torch.manual_seed(1)
    packed = pack_documents(examples, 32, "pad")
    logits = torch.randn(*packed.input_ids.shape, 300, dtype=torch.float64)
    terms = []
    for r, bounds in enumerate(packed.boundaries):
        for (a, b), ex in zip(
            bounds, examples[: len(bounds)] if r == 0 else examples[2:], strict=True
        ):
            for t in range(a, b - 1):
                target = int(ex.labels[t - a + 1])
                if target != IGNORE_INDEX:
                    terms.append(-float(torch.log_softmax(logits[r, t], 0)[target]))
    expected = sum(terms) / len(terms)
    assert abs(float(masked_lm_loss(logits, packed.labels)) - expected) < 1e-9


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("attention", ["mask", "position_ids"])
def test_packed_forward_equals_separate_forwards(examples, attn: str, attention: str) -> None:
    from trainforge_core.models import tiny_llama

    model = tiny_llama(
        vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, attn_implementation=attn
    ).eval()
    packed = pack_documents(examples, 32, "pad", pad_id=258)
    with torch.no_grad():
        packed_out = model(**packed.model_inputs(attention))
        worst = 0.0
        sep_losses = []
        for r, bounds in enumerate(packed.boundaries):
            for a, b in bounds:
                sep = model(
                    input_ids=packed.input_ids[r : r + 1, a:b], labels=packed.labels[r : r + 1, a:b]
                )
                sep_losses.append((float(sep.loss), int((packed.labels[r, a + 1 : b] >= 0).sum())))
                worst = max(
                    worst, float((sep.logits - packed_out.logits[r : r + 1, a:b]).abs().max())
                )
        # no information flows across documents: identical logits, identical loss
        assert worst < 1e-5
        token_weighted = sum(l * n for l, n in sep_losses) / sum(n for _, n in sep_losses)
        assert abs(float(packed_out.loss) - token_weighted) < 1e-5
        # without the mask / position restarts the second document sees the first
        naive = model(input_ids=packed.input_ids, use_cache=False).logits
        a, b = packed.boundaries[0][1]
        sep = model(input_ids=packed.input_ids[:1, a:b]).logits
        assert float((sep - naive[:1, a:b]).abs().max()) > 1e-3


def test_collator_packed_rows_and_padded_examples(examples) -> None:
    packed = pack_documents(examples, 32, "pad")
    rows = [packed[i] for i in range(len(packed))]
    batch = MeCoCollator()(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids", "use_cache"}
    assert torch.equal(batch["position_ids"], packed.position_ids)
    with_mask = MeCoCollator(attention="mask", mask_dtype=torch.bool)(rows)
    assert torch.equal(with_mask["attention_mask"], packed.attention_mask(torch.bool))
    assert [r["input_ids"].tolist() for r in packed] == packed.input_ids.tolist()
    padded = MeCoCollator(pad_id=258)(examples)
    assert padded["input_ids"].shape == (3, 23)
    assert padded["attention_mask"].sum(1).tolist() == [19, 5, 23]
    assert (
        padded["labels"][1, 5:].eq(IGNORE_INDEX).all() and padded["input_ids"][1, 5:].eq(258).all()
    )


def test_packing_bad_inputs(examples) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        pack_documents(examples, 1)
    with pytest.raises(ValueError, match="strategy"):
        pack_documents(examples, 32, "bfd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="long_documents"):
        pack_documents(examples, 32, long_documents="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad_id"):
        pack_documents(examples, 32, pad_id=-1)
    with pytest.raises(ValueError, match="restore_last"):
        pack_documents(examples, 32, restore_last=-1)
    with pytest.raises(ValueError, match="empty"):
        pack_documents([], 32)
    with pytest.raises(TypeError, match="iterable of examples"):
        pack_documents("abc", 32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example 0"):
        pack_documents([42], 32)
    with pytest.raises(ValueError, match="2 input_ids but 3 labels"):
        pack_documents([([1, 2], [1, 2, 3])], 32)
    with pytest.raises(ValueError, match="no full row"):
        pack_documents(examples[:1], 32, drop_last=True)
    with pytest.raises(TypeError, match="integer tensor"):
        block_causal_mask(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="dtype"):
        block_causal_mask(torch.zeros(2, 3, dtype=torch.long), torch.int32)
    with pytest.raises(ValueError, match="attention"):
        MeCoCollator(attention="flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad_id"):
        MeCoCollator(pad_id=-2)
    with pytest.raises(ValueError, match="empty"):
        MeCoCollator()([])
    packed = pack_documents(examples, 32, "pad")
    with pytest.raises(ValueError, match="attention"):
        packed.model_inputs("flash")  # type: ignore[arg-type]


def test_declared_transformers_floor_is_where_isolation_was_measured() -> None:
    """transformers 4.45.2 - 4.53.0 ignore restarting position_ids (0.25 max logit leak on a
    tiny Llama); 4.53.1 isolates (< 1e-7). The declared floor must not admit a leaking one."""
    from importlib.metadata import requires

    from trainforge_meco.packing import POSITION_IDS_ISOLATION_MIN, _version_tuple

    spec = next(r for r in requires("trainforge-meco") if r.startswith("transformers"))
    assert ">=" in spec, spec
    floor = _version_tuple(spec.split(">=")[1].split(",")[0].split(";")[0].strip())
    assert floor >= POSITION_IDS_ISOLATION_MIN == (4, 53, 1)


@pytest.mark.parametrize("version", ["4.45.2", "4.52.4", "4.53.0", "4.53.0rc1"])
def test_position_ids_packing_is_refused_on_a_leaking_transformers(version, monkeypatch) -> None:
    import trainforge_meco.packing as packing

    monkeypatch.setattr(packing, "_installed_transformers", lambda: version)
    with pytest.raises(
        RuntimeError, match=r"upgrade to transformers>=4.53.1 or use attention='mask'"
    ):
        MeCoCollator()
    MeCoCollator(attention="mask")  # the explicit mask isolates on every version
    for ok in ("4.53.1", "4.54.0.dev0", "5.22.1"):
        packing._check_position_ids_isolation(ok)
