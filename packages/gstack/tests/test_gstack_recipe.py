"""train_gstack reads every GStackPlan flag (they used to be read by no code): a fresh or
carried-over optimizer, a restarted or continued schedule, unseen or repeated batches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainforge_core.data import LMData
from trainforge_core.models import tiny_llama
from trainforge_gstack import GStackPlan, WindowStream, phase_in_of, train_gstack

VOCAB, SEQ, BATCH = 50, 8, 2


def data() -> LMData:
    gen = torch.Generator().manual_seed(0)
    return LMData(
        train=torch.randint(0, VOCAB, (4000,), generator=gen),
        eval=torch.randint(0, VOCAB, (400,), generator=gen),
        vocab_size=VOCAB,
    )


def small() -> torch.nn.Module:
    return tiny_llama(seed=0, num_layers=1, hidden_size=16, num_heads=2, vocab_size=VOCAB,
                      max_position_embeddings=SEQ)  # fmt: skip


def plan(**kw) -> GStackPlan:
    tps = SEQ * BATCH
    base = GStackPlan(n_params=1e4, tokens=6 * tps, factor=2, growth_tokens=4 * tps,
                      warmup_steps=2, small_lr=1e-2, small_min_lr=1e-3, large_lr=3e-3,
                      large_min_lr=3e-4)  # fmt: skip
    return dataclasses.replace(base, **kw)


def run(op: str = "stack", **kw):
    return train_gstack(small(), data(), plan(**kw), batch_size=BATCH, seq_len=SEQ, op=op,
                        eval_batches=1)  # fmt: skip


def test_stage2_reads_batches_the_small_model_has_not_seen():
    stream = WindowStream(data(), BATCH, SEQ, seed=0)
    seen = {tuple(w.tolist()) for k in range(4) for w in stream.batch(k)}
    later = {tuple(w.tolist()) for k in range(4, 10) for w in stream.batch(k)}
    assert not seen & later  # non-overlapping windows, one epoch
    assert torch.equal(stream.batch(3), WindowStream(data(), BATCH, SEQ, seed=0).batch(3))
    assert run().stage2_first_batch == 4  # g_stack.sh --resume_id: skip stage 1's batches
    assert run(skip_seen_data=False).stage2_first_batch == 0


def test_schedule_restarts_or_continues():
    p = plan()
    res = run()
    lr1, lr2 = res.details["lr1"], res.details["lr2"]
    assert res.small_steps == 4 and res.large_steps == 6
    assert lr1 == [p.lr(1, i, 6) for i in range(4)]
    assert lr1[0] == 0.0 and lr1[2] == pytest.approx(p.small_lr)
    # The small model is not annealed at growth (cosine horizon = the large run's).
    assert lr1[-1] > p.small_min_lr
    assert lr2[0] == 0.0 and lr2[2] == pytest.approx(p.large_lr)  # re-warm-up
    assert lr2[-1] < p.large_lr
    cont = run(restart_schedule=False).details["lr2"]
    assert cont == [p.lr(2, 4 + i, 10) for i in range(6)] and cont[0] > 0


def test_optimizer_is_fresh_or_carried_over():
    def steps(res):
        q = res.grown.model.layers[1].self_attn.q_proj.weight
        return float(res.optimizer.state[q]["step"])

    assert steps(run()) == 6  # a new AdamW: only stage 2's steps
    assert steps(run(reset_optimizer=False)) == 4 + 6  # the source block's state went on
    with pytest.raises(ValueError, match="reset_optimizer"):
        run("random", reset_optimizer=False)


def test_carried_state_equals_the_source_parameters_state(monkeypatch):
    import trainforge_gstack.recipe as recipe

    made = {}
    real = recipe._carry_state

    def spy(small_, opt, grown, plan_, layers, op):
        new = real(small_, opt, grown, plan_, layers, op)
        src = small_.model.layers[0].self_attn.q_proj.weight
        made["want"] = opt.state[src]["exp_avg"].clone()
        made["got"] = [new.state[b.self_attn.q_proj.weight]["exp_avg"] for b in grown.model.layers]
        made["copies"] = [g.clone() for g in made["got"]]
        made["src"] = opt.state[src]["exp_avg"]
        return new

    monkeypatch.setattr(recipe, "_carry_state", spy)
    run(reset_optimizer=False)
    assert made["want"].abs().sum() > 0
    for copy in made["copies"]:  # stack x2: both copies start from block 0's moments
        assert torch.equal(copy, made["want"])
    assert all(g is not made["src"] for g in made["got"])  # cloned, not shared


def test_random_phase_in_is_stepped_by_the_loop():
    res = train_gstack(small(), data(), plan(), batch_size=BATCH, seq_len=SEQ, op="random",
                       eval_batches=1)  # fmt: skip
    phase = phase_in_of(res.grown)
    assert phase.step_count == 1 and phase.done  # one group, switched after the first step


def test_bad_recipe_input():
    with pytest.raises(TypeError, match="plan"):
        train_gstack(small(), data(), {"tokens": 1}, batch_size=BATCH, seq_len=SEQ)
    with pytest.raises(TypeError, match="data"):
        train_gstack(small(), torch.zeros(10), plan(), batch_size=BATCH, seq_len=SEQ)
    with pytest.raises(ValueError, match="eval_every"):
        train_gstack(small(), data(), plan(), batch_size=BATCH, seq_len=SEQ, eval_every=0)
    with pytest.raises(ValueError, match="batch_size"):
        WindowStream(data(), 0, SEQ)
    with pytest.raises(ValueError, match="do not fill"):
        WindowStream(data(), 1000, SEQ)
    with pytest.raises(ValueError, match="warmup_steps"):
        plan(warmup_steps=-1)
    with pytest.raises(TypeError, match="skip_seen_data"):
        plan(skip_seen_data="yes")
    with pytest.raises(ValueError, match="minimum"):
        plan(large_min_lr=1.0)
    with pytest.raises(ValueError, match="stage"):
        plan().lr(3, 0, 10)
    with pytest.raises(ValueError, match="iteration"):
        plan().lr(1, -1, 10)
