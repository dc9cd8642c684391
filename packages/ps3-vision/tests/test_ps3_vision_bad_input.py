import pytest
import torch
from conftest import tiny_encoder, tiny_vit

from trainforge_ps3_vision import (
    PS3Config,
    PS3Encoder,
    apply_ps3,
    box_supervision_loss,
    boxes_to_map,
    localized_contrastive_loss,
    map_to_grid,
    rescale_budget,
    selected_patch_embed,
    selection_budget,
    topk_select,
)

CFG = PS3Config(scales=(16, 32, 64), max_select=40, highres_cue=False)


@pytest.mark.parametrize("budget", [0, -3, 321, 0.0, 1.5, "most", True, None])
def test_encode_rejects_bad_budgets(enc, image, budget):
    with pytest.raises((ValueError, TypeError), match="budget"):
        enc.encode(image, budget=budget)


def test_encode_rejects_bad_images_and_prompts(enc, image):
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        enc.encode(torch.randn(1, 3, 62, 64), budget=4)
    with pytest.raises(ValueError, match="image must be"):
        enc.encode(torch.randn(3, 64, 64), budget=4)
    with pytest.raises(ValueError, match="image must be"):
        enc.encode(torch.zeros(1, 3, 64, 64, dtype=torch.long), budget=4)
    with pytest.raises(TypeError, match="image"):
        enc.encode([[1.0]], budget=4)
    with pytest.raises(ValueError, match=r"prompt must be \(B, 32\)"):
        enc.encode(image, budget=4, prompt=torch.randn(2, 16))
    with pytest.raises(ValueError, match="batch"):
        enc.encode(image, budget=4, prompt=torch.randn(3, 32))
    with pytest.raises(TypeError, match="prompt"):
        enc.encode(image, budget=4, prompt=[0.0] * 32)
    with pytest.raises(ValueError, match="gt_map"):
        enc.encode(image, budget=4, gt_map=torch.zeros(2, 32, 32))
    with pytest.raises(ValueError, match="select must be"):
        enc.encode(image, budget=4, select="best")


def test_trunks_it_cannot_host():
    with pytest.raises(ValueError, match="prefix token"):
        apply_ps3(tiny_vit(class_token=True, global_pool="token"), CFG)
    with pytest.raises(ValueError, match="prefix token"):
        apply_ps3(tiny_vit(reg_tokens=2), CFG)
    with pytest.raises(ValueError, match="pos_embed"):
        apply_ps3(tiny_vit(pos_embed="none"), CFG)
    with pytest.raises(ValueError, match="patch drop"):
        apply_ps3(tiny_vit(patch_drop_rate=0.1), CFG)
    with pytest.raises(TypeError, match="timm VisionTransformer"):
        apply_ps3(torch.nn.Linear(3, 3), CFG)
    with pytest.raises(TypeError, match="trunk"):
        PS3Encoder("vit", CFG)
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        apply_ps3(tiny_vit(), PS3Config(scales=(18, 36), highres_cue=False))
    with pytest.raises(ValueError, match="select_layers"):
        apply_ps3(tiny_vit(), PS3Config(scales=(16, 32), select_layers=(0, 9), highres_cue=False))
    with pytest.raises(TypeError, match="config"):
        apply_ps3(tiny_vit(), {"scales": (16, 32)})


@pytest.mark.parametrize(
    "kw",
    [
        {"scales": (16,)},
        {"scales": (32, 16)},
        {"scales": (16, 24)},
        {"scales": (16, 0)},
        {"max_select": 0},
        {"max_select": 2.5},
        {"logit_scale": 0.0},
    ],
)
def test_config_rejects_bad_values(kw):
    with pytest.raises((ValueError, TypeError)):
        PS3Config(**kw)


def test_functions_reject_bad_input(enc):
    with pytest.raises(ValueError, match="scales"):
        selection_budget([378], 10)
    with pytest.raises(ValueError, match="budget"):
        selection_budget([16, 32], 0)
    with pytest.raises(TypeError, match="budget"):
        selection_budget([16, 32], 1.0)
    with pytest.raises(ValueError, match="budget"):
        rescale_budget([2, 8], 11)
    with pytest.raises(ValueError, match="budget"):
        topk_select([torch.rand(1, 2, 2)], [1, 2])
    with pytest.raises(ValueError, match="budget"):
        topk_select([torch.rand(1, 2, 2)], [-1])
    with pytest.raises(ValueError, match="probs"):
        topk_select([torch.rand(2, 2)], [1])
    with pytest.raises(ValueError, match="exclude"):
        topk_select([torch.rand(1, 2, 2)], [1], exclude=[torch.zeros(1, 3, 3, dtype=torch.bool)])
    with pytest.raises(ValueError, match="boxes"):
        boxes_to_map(torch.zeros(4), 8, 8)
    with pytest.raises(ValueError, match="height"):
        boxes_to_map(torch.zeros(1, 4), 0, 8)
    with pytest.raises(ValueError, match="gt_map"):
        map_to_grid(torch.zeros(8, 8), (2, 2))
    pe = enc.trunk.patch_embed
    with pytest.raises(ValueError, match="not divisible"):
        selected_patch_embed(pe, torch.randn(1, 3, 10, 8), torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="index"):
        selected_patch_embed(pe, torch.randn(1, 3, 8, 8), torch.tensor([[4]]))
    with pytest.raises(ValueError, match="index"):
        selected_patch_embed(pe, torch.randn(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="image"):
        selected_patch_embed(pe, torch.randn(3, 8, 8), torch.tensor([[0]]))


def test_losses_and_pooling_reject_bad_input(enc, image):
    with pytest.raises(ValueError, match="must match"):
        localized_contrastive_loss(torch.randn(2, 4), torch.randn(3, 4), 10.0)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        localized_contrastive_loss(torch.randn(4), torch.randn(4), 10.0)
    with pytest.raises(ValueError, match="probs"):
        box_supervision_loss([], torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="gt_map"):
        box_supervision_loss([torch.rand(2, 2, 2)], torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="is_local"):
        box_supervision_loss([torch.rand(2, 2, 2)], torch.zeros(2, 8, 8), torch.ones(3))
    out = enc.encode(image, budget=8)
    with pytest.raises(ValueError, match="mask"):
        enc.pool(out.tokens, torch.ones(2, 3))
    with pytest.raises(ValueError, match="gt_map"):
        enc.box_pool(out, torch.zeros(64, 64))


def test_tiny_encoder_fixture_is_usable():
    assert tiny_encoder().width == 32


def test_text_prompts_of_the_wrong_width_or_without_prompt_proj(image):
    enc = tiny_encoder(prompt_dim=24)
    with pytest.raises(ValueError, match=r"prompt must be \(B, 24\).*prompt_dim"):
        enc.encode(image, budget=4, prompt=torch.randn(2, 32))  # the trunk's width: not text
    with pytest.raises(ValueError, match=r"text_emb must be float \(B, 24\)"):
        enc.project_prompt(torch.randn(2, 16))
    with pytest.raises(ValueError, match="text_emb must be float"):
        enc.project_prompt(torch.ones(2, 24, dtype=torch.long))
    with pytest.raises(TypeError, match="text_emb"):
        enc.project_prompt([0.0] * 24)
    with pytest.raises(ValueError, match="needs PS3Config\\(prompt_dim"):
        tiny_encoder().project_prompt(torch.randn(2, 24))
    for bad in (0, -4, 2.5, True):
        with pytest.raises(ValueError, match="prompt_dim"):
            PS3Config(scales=(16, 32), prompt_dim=bad)
