"""Slow: a box-supervised, prompt-guided selector beats random selection at equal budget."""

import pytest
import timm
import torch

from trainforge_ps3_vision import PS3Config, apply_ps3, box_supervision_loss, boxes_to_map

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])  # red, green


def scenes(n, gen):
    """64x64 noise with a red and a green 8x8 square; the prompt names one of them."""
    x = torch.randn(n, 3, 64, 64, generator=gen) * 0.3
    boxes = torch.empty(n, 4)
    target = torch.randint(0, 2, (n,), generator=gen)
    for i in range(n):
        while True:
            (r0, c0), (r1, c1) = torch.randint(0, 56, (2, 2), generator=gen).tolist()
            if abs(r0 - r1) >= 10 or abs(c0 - c1) >= 10:
                break
        for k, (r, c) in enumerate([(r0, c0), (r1, c1)]):
            x[i, :, r : r + 8, c : c + 8] = COLOURS[k].view(3, 1, 1)
            if k == int(target[i]):
                boxes[i] = torch.tensor([c, r, c + 8, r + 8], dtype=torch.float32)
    return x, boxes, target


def run(seed):
    torch.manual_seed(seed)
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, num_classes=0, class_token=False,
        global_pool="avg", img_size=32, patch_size=4, embed_dim=32, depth=2, num_heads=2,
    )  # fmt: skip
    enc = apply_ps3(vit, PS3Config(scales=(32, 64), max_select=64, highres_cue=False))
    prompts = torch.nn.Embedding(2, 32)
    for p in enc.trunk.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam([*enc.selection_parameters(), *prompts.parameters()], lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(60):
        x, boxes, y = scenes(16, gen)
        out = enc.encode(x, budget=1, prompt=prompts(y))
        loss = box_supervision_loss(out.posterior_probs, boxes_to_map(boxes, 64, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    enc.eval()
    x, boxes, y = scenes(64, gen)
    gt = boxes_to_map(boxes, 64, 64)
    grid_gt = torch.nn.functional.interpolate(gt[:, None], size=(16, 16), mode="area")[:, 0] > 0
    recall = {}
    with torch.no_grad():
        for select in ("saliency", "random"):
            out = enc.encode(x, budget=16, prompt=prompts(y), select=select,
                             generator=torch.Generator().manual_seed(seed))  # fmt: skip
            m = out.selection_maps[0]
            recall[select] = float((m & grid_gt).sum() / grid_gt.sum())
    return recall


@pytest.mark.slow
def test_prompt_guided_selection_beats_random_at_equal_budget():
    for seed in (0, 1):
        recall = run(seed)
        # random: 16 of 256 patches -> about 6% of the prompted square's patches
        assert recall["random"] < 0.2, recall
        assert recall["saliency"] > recall["random"] + 0.3, recall
