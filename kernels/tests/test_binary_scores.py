"""trainforge::binary_scores: packed XNOR/AND popcount scores vs float +-1 / {0,1} matmuls."""

from __future__ import annotations

import pytest
import torch

from trainforge_kernels import binary_scores as mod
from trainforge_kernels import kernels
from trainforge_kernels.binary_scores import (
    binary_scores,
    binary_scores_reference,
    pack_bits,
    unpack_bits,
)
from trainforge_kernels.testing import needs_interpreter_reason, poisoned_like
from trainforge_kernels.testing import test_device as _device


def _codes(lead, m, n, nbits, seed):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 2, (*lead, m, nbits), generator=g),
        torch.randint(0, 2, (*lead, n, nbits), generator=g),
    )


def _float_truth(a_bits, b_bits, mode):
    """The definition, independently: a float64 matmul of +-1 (xnor) or {0,1} (and) codes."""
    fa, fb = a_bits.double(), b_bits.double()
    if mode == "xnor":
        fa, fb = 2 * fa - 1, 2 * fb - 1
    return (fa @ fb.transpose(-1, -2)).round().to(torch.int32)


@pytest.mark.parametrize("nbits", [1, 7, 16, 31, 32, 33, 64, 100])
def test_pack_unpack_round_trip_and_layout(nbits):
    bits, _ = _codes((3,), 5, 1, nbits, nbits)
    packed = pack_bits(bits)
    assert packed.dtype == torch.int32 and packed.shape == (3, 5, (nbits + 31) // 32)
    assert torch.equal(unpack_bits(packed, nbits), bits.to(torch.uint8))
    # bit j is bit j % 32 of word j // 32
    one = torch.zeros(nbits, dtype=torch.long)
    one[nbits - 1] = 1
    word = pack_bits(one)[(nbits - 1) // 32]
    assert int(word) & 0xFFFFFFFF == 1 << ((nbits - 1) % 32)


@pytest.mark.parametrize("mode", ["xnor", "and"])
@pytest.mark.parametrize("nbits", [1, 16, 32, 33, 95])
def test_packed_popcount_equals_float_matmul_exactly(mode, nbits):
    a, b = _codes((2, 3), 11, 9, nbits, seed=nbits)
    pa, pb = pack_bits(a), pack_bits(b)
    truth = _float_truth(a, b, mode)
    assert torch.equal(binary_scores_reference(pa, pb, nbits, mode), truth)
    assert torch.equal(binary_scores(pa, pb, nbits, mode), truth)  # the CPU matmul path


def test_xnor_identity_with_hamming_distance():
    a, b = _codes((), 6, 6, 40, seed=3)
    hamming = (a.unsqueeze(1) != b.unsqueeze(0)).sum(-1)
    got = binary_scores(pack_bits(a), pack_bits(b), 40)
    assert torch.equal(got, (40 - 2 * hamming).to(torch.int32))


def test_opcheck_and_registration():
    a, b = _codes((2,), 5, 4, 20, seed=1)
    torch.library.opcheck(
        torch.ops.trainforge.binary_scores.default, (pack_bits(a), pack_bits(b), 20, "xnor")
    )
    assert "binary_scores" in kernels()
    cases = kernels()["binary_scores"].bench_cases()
    assert cases and all(c.op == "binary_scores" for c in cases)


_GOOD = dict(a=pack_bits(torch.ones(4, 16)), b=pack_bits(torch.ones(3, 16)), nbits=16)


@pytest.mark.parametrize(
    "bad, error",
    [
        (dict(a=torch.zeros(4, 1)), TypeError),  # float words
        (dict(a=[[1]]), TypeError),
        (dict(nbits=40), ValueError),  # 40 bits need 2 words, a has 1
        (dict(nbits=0), ValueError),
        (dict(nbits=True), ValueError),
        (dict(mode="or"), ValueError),
        (dict(a=torch.zeros(1, dtype=torch.int32)), ValueError),  # no token axis
        (dict(a=pack_bits(torch.ones(2, 4, 16))), ValueError),  # leading dims differ
    ],
)
def test_bad_input(bad, error):
    args = dict(_GOOD, mode="xnor")
    args.update(bad)
    with pytest.raises(error):
        binary_scores(**args)


@pytest.mark.parametrize(
    "bits, error",
    [(torch.tensor([0, 2, 1]), ValueError), (torch.zeros(3, 0), ValueError), ("101", TypeError)],
)
def test_pack_bits_bad_input(bits, error):
    with pytest.raises(error):
        pack_bits(bits)


def test_unpack_bits_bad_input():
    with pytest.raises(ValueError, match="words"):
        unpack_bits(torch.zeros(3, 2, dtype=torch.int32), 16)


_SHAPES = [
    ((), 64, 64, 32),  # exact tiles, one full word
    ((2,), 70, 45, 16),  # ragged rows and columns, a part word
    ((2, 3), 5, 130, 33),  # batch of heads, a second word with one bit
    ((1,), 1, 1, 100),  # single token
    ((), 129, 3, 256),  # eight words
]


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("mode", ["xnor", "and"])
def test_triton_matches_reference(shape, mode, monkeypatch):
    lead, m, n, nbits = shape
    a, b = _codes(lead, m, n, nbits, seed=m + n + nbits)
    pa, pb = pack_bits(a).to(_device()), pack_bits(b).to(_device())
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *x, **k: poisoned_like(real_empty(*x, **k)))
    got = mod._scores_triton(pa, pb, nbits, mode)
    monkeypatch.undo()
    assert torch.equal(got.cpu(), _float_truth(a, b, mode))
    assert torch.equal(got.cpu(), binary_scores_reference(pa, pb, nbits, mode).cpu())


@pytest.mark.skipif(needs_interpreter_reason() is not None, reason=str(needs_interpreter_reason()))
def test_public_op_dispatches_to_triton(monkeypatch):
    monkeypatch.setenv("TRAINFORGE_KERNELS", "triton")
    called = []
    real = mod._scores_triton
    monkeypatch.setattr(mod, "_scores_triton", lambda *x: called.append(1) or real(*x))
    a, b = _codes((2,), 9, 7, 40, seed=5)
    got = binary_scores(pack_bits(a).to(_device()), pack_bits(b).to(_device()), 40)
    assert called
    assert torch.equal(got.cpu(), _float_truth(a, b, "xnor"))
