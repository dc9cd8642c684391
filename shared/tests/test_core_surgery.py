import warnings

import pytest
import torch
from torch import nn

from trainforge_core import NoEffectWarning, count_parameters, replace_modules


class Wrapped(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 2


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    )


def test_replaces_matching_modules_once_and_reports():
    m = model()
    x = torch.randn(3, 4)
    done = replace_modules(
        m,
        lambda n, mod: isinstance(mod, nn.Linear) and n.startswith("2."),
        lambda n, mod: Wrapped(mod),
    )
    assert [r.name for r in done] == ["2.0", "2.1"]
    assert {(r.old, r.new) for r in done} == {("Linear", "Wrapped")}
    assert isinstance(m[2][0], Wrapped) and isinstance(m[2][0].inner, nn.Linear)
    # Each wrapper applies once: a wrapper was not itself matched and wrapped again.
    hidden = m[2][0].inner(torch.relu(m[0](x))) * 2
    torch.testing.assert_close(m(x), m[2][1].inner(hidden) * 2)


def test_no_match_warns_and_leaves_model():
    m = model()
    with pytest.warns(NoEffectWarning, match="no module matched"):
        assert replace_modules(m, lambda n, mod: False, lambda n, mod: mod) == []


def test_bad_inputs():
    with pytest.raises(TypeError, match="nn.Module"):
        replace_modules("model", lambda n, m: True, lambda n, m: m)
    with pytest.raises(TypeError, match="callables"):
        replace_modules(model(), None, lambda n, m: m)
    with pytest.raises(TypeError, match="factory returned int"):
        replace_modules(model(), lambda n, m: isinstance(m, nn.ReLU), lambda n, m: 3)
    with pytest.raises(TypeError, match="nn.Module"):
        count_parameters([1, 2])


def test_count_parameters_counts_tied_once_and_trainable():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    m = nn.ModuleDict({"emb": emb, "head": head, "norm": nn.LayerNorm(4)})
    assert count_parameters(m) == 40 + 8
    m["norm"].requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert count_parameters(nn.Identity()) == 0
