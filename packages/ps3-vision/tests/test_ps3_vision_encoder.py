import io

import pytest
import torch
import torch.nn.functional as F
from conftest import SCALES, tiny_encoder
from timm.layers import resample_abs_pos_embed

from trainforge_ps3_vision import (
    attend_with_cache,
    box_supervision_loss,
    boxes_to_map,
    full_patch_embed,
    localized_contrastive_loss,
    scale_pos_embed,
    selected_patch_embed,
    selection_budget,
    topk_select,
)


def test_budget_split_matches_reference_numbers():
    # NVlabs/PS3 README / spec: 4K with 2560 tokens -> [85, 341, 2134]; 1.5K -> [512, 2048]
    assert selection_budget([378, 756, 1512, 3780], 2560) == [85, 341, 2134]
    assert selection_budget([378, 756, 1512], 2560) == [512, 2048]
    assert selection_budget(SCALES, 40) == [8, 32]


def timm_low_res_hidden(enc, image):
    """The trunk's own timm path (patch_embed, _pos_embed, blocks) on the low-res view."""
    t = enc.trunk
    x = F.interpolate(image, size=(SCALES[0], SCALES[0]), mode="bicubic")
    x = t.norm_pre(t._pos_embed(t.patch_embed(x)))
    hidden = []
    for blk in t.blocks:
        x = blk(x)
        hidden.append(x)
    return hidden


@pytest.mark.parametrize(
    "vit_kw", [{}, {"qk_norm": True, "init_values": 0.1}, {"global_pool": "avg"}]
)
def test_low_res_pass_equals_timm_and_probability_formula(vit_kw, image):
    enc = tiny_encoder(**vit_kw)
    ref = timm_low_res_hidden(enc, image)
    hidden, _ = enc.forward_low_res(image)
    for a, b in zip(hidden, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    prompt = torch.randn(2, 32)
    out = enc.encode(image, budget=10, prompt=prompt)
    torch.testing.assert_close(out.low_res_tokens, ref[-1], rtol=1e-5, atol=1e-5)
    # hand formula: sigmoid(clamp(5 cos(F_1, p), -10, 10)) on the first scale's map, nearest
    # upsampled to every high-res grid
    feats = torch.cat([ref[i] for i in enc.select_layers], dim=-1)
    f = enc.selection_feature_proj(feats)[..., :32].reshape(2, 4, 4, 32)
    cos = F.cosine_similarity(f, prompt[:, None, None, :], dim=-1)
    p = torch.sigmoid((5 * cos).clamp(-10, 10))
    for grid, probs in zip(((8, 8), (16, 16)), out.posterior_probs, strict=True):
        rep = grid[0] // 4
        want = p.repeat_interleave(rep, 1).repeat_interleave(rep, 2)
        torch.testing.assert_close(probs, want, rtol=1e-6, atol=1e-6)
    assert out.selection_probs is out.posterior_probs
    assert out.prior_probs is not None and not torch.allclose(
        out.prior_probs[0], out.posterior_probs[0]
    )


def test_topk_picks_top_saliency_and_carries_shortfall():
    torch.manual_seed(0)
    probs = [torch.rand(3, 2, 2), torch.rand(3, 4, 4)]
    maps = topk_select(probs, [2, 5])
    for p, m, k in zip(probs, maps, [2, 5], strict=True):
        flat, sel = p.flatten(1), m.flatten(1)
        assert (sel.sum(1) == k).all()
        want = flat.topk(k, dim=1).indices
        assert torch.equal(sel, torch.zeros_like(sel).scatter(1, want, True))
    # 3 of the 4 low scale patches are taken: budget 2 there leaves 1 short -> next scale +1
    exclude = [
        torch.tensor([[[True, True], [True, False]]]).expand(3, 2, 2),
        torch.zeros(3, 4, 4, dtype=torch.bool),
    ]
    maps = topk_select(probs, [2, 5], exclude=exclude)
    assert (maps[0].flatten(1).sum(1) == 1).all() and (maps[0] & exclude[0]).sum() == 0
    assert (maps[1].flatten(1).sum(1) == 6).all()
    # ties: raster order (lower index first)
    tied = [torch.full((1, 2, 2), 0.5), torch.full((1, 4, 4), 0.5)]
    maps = topk_select(tied, [1, 3])
    assert maps[0].flatten().tolist() == [True, False, False, False]
    assert maps[1].flatten()[:4].tolist() == [True, True, True, False]


@pytest.mark.parametrize("budget", [1, 7, 40, 41, 95, "all", 0.25])
def test_encode_respects_budget_and_picks_top_saliency(enc, image, budget):
    out = enc.encode(image, budget=budget, prompt=torch.randn(32))
    n = {"all": 320, 0.25: 80}.get(budget, budget)
    assert out.high_res_tokens.shape[1] == n
    assert out.tokens.shape[1] == 16 + n
    assert out.looks == -(-n // 40)
    assert all(int(m.sum()) == 2 * int(m[0].sum()) for m in out.selection_maps)
    assert sum(int(m[0].sum()) for m in out.selection_maps) == n
    pos = out.high_res_positions
    for b in range(2):  # positions are unique and match the selection maps
        keys = {tuple(r) for r in pos[b].tolist()}
        assert len(keys) == n
        want = {
            (k + 1, r, c)
            for k, m in enumerate(out.selection_maps)
            for r, c in m[b].nonzero().tolist()
        }
        assert keys == want
    if n <= 40:  # one look: every selected patch is at least as probable as any unselected one
        for p, m in zip(out.selection_probs, out.selection_maps, strict=True):
            for b in range(2):
                if m[b].any() and (~m[b]).any():
                    assert p[b][m[b]].min() >= p[b][~m[b]].max()


def test_selected_patch_embed_equals_full_patchify_then_gather(enc):
    torch.manual_seed(3)
    img = torch.randn(2, 3, 64, 48)
    idx = torch.stack([torch.randperm(16 * 12)[:20], torch.randperm(16 * 12)[:20]])
    full = full_patch_embed(enc.trunk.patch_embed, img)
    conv = enc.trunk.patch_embed.proj(img).flatten(2).transpose(1, 2)
    torch.testing.assert_close(full, conv)
    want = full.gather(1, idx.unsqueeze(-1).expand(-1, -1, 32))
    got = selected_patch_embed(enc.trunk.patch_embed, img, idx)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_scale_pos_embed_equals_timm_resample_on_square_grids(enc):
    pe = enc.trunk.pos_embed
    got = scale_pos_embed(pe, (4, 4), (16, 16))
    want = resample_abs_pos_embed(pe, (16, 16), (4, 4), num_prefix_tokens=0)
    torch.testing.assert_close(got, want)
    # non-square: the square of the longer side, cropped (the reference's rule)
    crop = scale_pos_embed(pe, (4, 4), (16, 12)).view(16, 12, 32)
    torch.testing.assert_close(crop, want.view(16, 16, 32)[:, :12])


def joint_masked_forward(enc, image, pos):
    """Independent float64 reference: one sequence [low ; high] through the blocks with an
    explicit block mask (low rows see low only; high rows see low + high), softmax by hand."""
    t = enc.trunk
    low = F.interpolate(image, size=(16, 16), mode="bicubic")
    x_low = full_patch_embed(t.patch_embed, low) + t.pos_embed
    b = image.shape[0]
    highs = []
    for k, side in enumerate(SCALES[1:]):
        g = side // 4
        img = image if side == 64 else F.interpolate(image, size=(side, side), mode="bicubic")
        tok = full_patch_embed(t.patch_embed, img) + scale_pos_embed(t.pos_embed, (4, 4), (g, g))
        tok = tok + enc.pos_emb_residual[k]
        sel = pos[..., 0] == k + 1
        idx = (pos[..., 1] * g + pos[..., 2])[sel].view(b, -1)
        highs.append(tok.gather(1, idx.unsqueeze(-1).expand(-1, -1, tok.shape[-1])))
    x = torch.cat([x_low, *highs], dim=1)
    n_low, n = x_low.shape[1], x.shape[1]
    allowed = torch.zeros(n, n, dtype=torch.bool)
    allowed[:, :n_low] = True
    allowed[n_low:, n_low:] = True
    for blk in t.blocks:
        a = blk.attn
        h = blk.norm1(x)
        qkv = a.qkv(h).view(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k_, v = a.q_norm(qkv[0]), a.k_norm(qkv[1]), qkv[2]
        s = (q @ k_.transpose(-1, -2)) / a.head_dim**0.5
        s = s.masked_fill(~allowed, float("-inf"))
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, n, -1)
        x = x + blk.ls1(a.proj(o))
        x = x + blk.ls2(blk.mlp(blk.norm2(x)))
    return x[:, :n_low], x[:, n_low:]


def test_look_attends_only_to_low_res_cache_and_its_own_tokens(image):
    enc = tiny_encoder(qk_norm=True, init_values=0.5).double()
    img = image.double()
    out = enc.encode(img, budget=30)
    low, high = joint_masked_forward(enc, img, out.high_res_positions)
    torch.testing.assert_close(out.low_res_tokens, low, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out.high_res_tokens, high, rtol=1e-10, atol=1e-10)


def test_looks_do_not_see_each_other(enc, image):
    one = enc.encode(image, budget=40)
    two = enc.encode(image, budget=80)
    # the first look is the same in both runs: its tokens come back unchanged
    key = lambda p: [tuple(r) for r in p.tolist()]  # noqa: E731
    pos2 = key(two.high_res_positions[0])
    for i, p in enumerate(key(one.high_res_positions[0])):
        j = pos2.index(p)
        torch.testing.assert_close(one.high_res_tokens[0, i], two.high_res_tokens[0, j])
    assert two.looks == 2


def test_attention_hook_sees_cache_plus_own_keys(enc, image, monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q.shape[2], k.shape[2]))
        return real(q, k, v, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    enc.encode(image, budget=50)  # looks of 40 and 10
    depth = len(enc.trunk.blocks)
    assert seen == [(16, 16)] * depth + [(40, 56)] * depth + [(10, 26)] * depth


def test_gt_map_forces_box_patches_in(enc, image):
    box = boxes_to_map(torch.tensor([[40.0, 8.0, 56.0, 24.0]] * 2), 64, 64)
    out = enc.encode(image, budget=20, gt_map=box)
    assert out.selection_maps[0][:, 1:3, 5:7].all()  # the 8x8 grid's cells under the box


def test_selector_gradients_flow_in_training_mode(image):
    enc = tiny_encoder(cue=True).train()
    prompt = torch.randn(2, 32, requires_grad=True)
    box = boxes_to_map(torch.tensor([[0.0, 0.0, 16.0, 16.0], [32.0, 32.0, 64.0, 48.0]]), 64, 64)
    out = enc.encode(image, budget=30, prompt=prompt, gt_map=box)
    loss = box_supervision_loss(out.prior_probs, box) + box_supervision_loss(
        out.posterior_probs, box
    )
    loss.backward()
    for name, p in [
        ("selection_feature_proj", enc.selection_feature_proj.fc1.weight),
        ("prior_prompt", enc.prior_prompt),
        ("highres_cue", enc.highres_cue.stem[0].weight),
        ("prompt_proj_for_highres", enc.prompt_proj_for_highres.weight),
        ("prompt", prompt),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the contrastive loss reaches the trunk but not the selector: top-k is not differentiable
    enc.zero_grad()
    out = enc.encode(image, budget=30, prompt=prompt.detach(), gt_map=box)
    pooled = enc.box_pool(out, box)
    localized_contrastive_loss(pooled, torch.randn(2, 32), 10.0).backward()
    sel = enc.selection_feature_proj.fc1.weight.grad
    assert sel is None or sel.abs().sum() == 0
    assert enc.trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_box_pool_differs_from_pool_over_all(enc, image):
    box = boxes_to_map(torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 2), 64, 64)
    out = enc.encode(image, budget=40, gt_map=box)
    assert not torch.allclose(enc.box_pool(out, box), enc.pool(out.high_res_tokens))
    empty = torch.zeros(2, 64, 64)  # no token inside: pool every high-res token (reference)
    torch.testing.assert_close(enc.box_pool(out, empty), enc.pool(out.high_res_tokens))


def test_feature_maps_all_has_no_holes(enc, image):
    out = enc.encode(image, budget="all")
    maps = enc.feature_maps(out)
    assert [tuple(m.shape[-2:]) for m in maps] == [(4, 4), (8, 8), (16, 16)]
    assert all((m.abs().sum(1) > 0).all() for m in maps)


def test_non_square_image_keeps_aspect_on_the_patch_grid(enc):
    img = torch.randn(1, 3, 64, 32)
    out = enc.encode(img, budget="all")
    assert out.grids == [(8, 4), (16, 8)]
    assert out.high_res_tokens.shape[1] == 32 + 128


def test_state_dict_round_trip(enc, image):
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    other = tiny_encoder(seed=7)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    a = enc.encode(image, budget=25, prompt=torch.ones(32))
    b = other.encode(image, budget=25, prompt=torch.ones(32))
    assert torch.equal(a.positions, b.positions)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)


def test_attend_with_cache_without_cache_is_the_timm_block(enc):
    x = torch.randn(2, 5, 32)
    blk = enc.trunk.blocks[1]
    out, k, v = attend_with_cache(blk, x)
    torch.testing.assert_close(out, blk(x))
    assert k.shape == v.shape == (2, 2, 5, 16)


def test_prompt_proj_maps_text_embeddings_to_the_selection_prompt(image):
    # a text embedding of width 24 (any text encoder's output) -> prompt_proj -> width 32
    enc = tiny_encoder(prompt_dim=24, cue=True)
    plain = tiny_encoder(cue=True)
    plain.load_state_dict(
        {k: v for k, v in enc.state_dict().items() if not k.startswith("prompt_proj.")}
    )
    text = torch.randn(2, 24, dtype=torch.float64).float()
    mlp = enc.prompt_proj
    x = F.normalize(text, dim=-1)
    hand = mlp.fc2(mlp.norm(mlp.act(mlp.fc1(x))))  # timm Mlp: fc1, act, norm, fc2
    torch.testing.assert_close(enc.project_prompt(text), hand)
    out = enc.encode(image, budget=10, prompt=text)
    torch.testing.assert_close(out.prompt, hand)
    ref = plain.encode(image, budget=10, prompt=hand)
    assert torch.equal(out.positions, ref.positions)
    for a, b in zip(out.posterior_probs, ref.posterior_probs, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out.tokens, ref.tokens)
    assert enc.encode(image, budget=10).prompt is None
    # one text embedding for the whole batch
    torch.testing.assert_close(enc.encode(image, budget=10, prompt=text[0]).prompt[1], hand[0])


def test_prompt_proj_learns_from_the_box_loss_and_round_trips(image):
    enc = tiny_encoder(prompt_dim=24).train()
    assert {id(p) for p in enc.prompt_proj.parameters()} <= {
        id(p) for p in enc.selection_parameters()
    }
    box = boxes_to_map(torch.tensor([[8.0, 8.0, 24.0, 24.0]] * 2), 64, 64)
    out = enc.encode(image, budget=10, prompt=torch.randn(2, 24), gt_map=box)
    box_supervision_loss(out.posterior_probs, box).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.prompt_proj.parameters())
    buf = io.BytesIO()
    torch.save(enc.state_dict(), buf)
    buf.seek(0)
    other = tiny_encoder(seed=3, prompt_dim=24)
    other.load_state_dict(torch.load(buf, weights_only=True))
    text = torch.randn(2, 24)
    enc.eval()
    a = enc.encode(image, budget=12, prompt=text)
    b = other.eval().encode(image, budget=12, prompt=text)
    assert torch.equal(a.positions, b.positions)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
