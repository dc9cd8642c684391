"""unpad_input / pad_input round trip and gradients."""

from __future__ import annotations

import pytest
import torch

from trainforge_mosaicbert import pad_input, unpad_input


def test_unpad_pad_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 5, generator=g, dtype=torch.float64)
    mask = torch.zeros(3, 9, dtype=torch.long)
    for i, n in enumerate([9, 4, 1]):
        mask[i, :n] = 1
    rows, indices, cu, max_len = unpad_input(x, mask)
    assert rows.shape == (14, 5)
    assert cu.tolist() == [0, 9, 13, 14] and cu.dtype == torch.int32
    assert max_len == 9
    torch.testing.assert_close(rows, x[mask.bool()], rtol=0, atol=0)
    back = pad_input(rows, indices, 3, 9)
    torch.testing.assert_close(back, x * mask[..., None], rtol=0, atol=0)


def test_gradients_flow_to_real_positions_only():
    x = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    rows, idx, _, _ = unpad_input(x, mask)
    pad_input(rows * 2, idx, 2, 4).sum().backward()
    torch.testing.assert_close(x.grad, 2.0 * mask[..., None].float().expand(-1, -1, 3))


def test_unpad_bad_input():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        unpad_input(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="only 0 and 1"):
        unpad_input(x, torch.full((2, 4), 2))
    with pytest.raises(TypeError, match="attention_mask"):
        unpad_input(x, [[1, 1, 1, 1]] * 2)
    with pytest.raises(ValueError, match="hidden_states"):
        unpad_input(torch.randn(4), torch.ones(4))


def test_pad_bad_input():
    rows = torch.randn(3, 2)
    with pytest.raises(ValueError, match="indices has 2 entries"):
        pad_input(rows, torch.tensor([0, 1]), 1, 4)
    with pytest.raises(ValueError, match="beyond batch"):
        pad_input(rows, torch.tensor([0, 1, 9]), 2, 4)
    with pytest.raises(ValueError, match="batch"):
        pad_input(rows, torch.tensor([0, 1, 2]), -1, 4)
