from __future__ import annotations

import pytest
import torch


@pytest.fixture
def tiny_model():
    from trainforge_core.models import tiny_llama

    return tiny_llama(seed=0, vocab_size=64, hidden_size=32, num_layers=1, num_heads=4)


def lm_step(model, optimizer, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (2, 12), generator=gen)
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    return loss.item()
