import math

import torch

from trainforge_ps3_vision import box_supervision_loss, boxes_to_map, localized_contrastive_loss


def test_localized_contrastive_loss_equals_hand_computation():
    torch.manual_seed(0)
    img, txt = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    t, bias = 7.0, -2.5
    total = 0.0
    for i in range(3):
        ni = math.sqrt(sum(v * v for v in img[i].tolist()))
        for j in range(3):
            nj = math.sqrt(sum(v * v for v in txt[j].tolist()))
            dot = (
                sum(a * b for a, b in zip(img[i].tolist(), txt[j].tolist(), strict=True)) / ni / nj
            )
            z = (1.0 if i == j else -1.0) * (t * dot + bias)
            total += math.log(1.0 + math.exp(-z))  # -log sigmoid(z)
    got = localized_contrastive_loss(img, txt, t, bias)
    assert abs(got.item() - total / 3) < 1e-12


def test_box_supervision_loss_equals_hand_computation():
    # 2 images, an 8x8 pixel box map, two scales of 2x2 and 4x4 probabilities
    box = boxes_to_map(torch.tensor([[0.0, 0.0, 3.0, 3.0], [4.0, 6.0, 8.0, 8.0]]), 8, 8).double()
    torch.manual_seed(1)
    p2 = torch.rand(2, 2, 2, dtype=torch.float64) * 0.9 + 0.05
    p4 = torch.rand(2, 4, 4, dtype=torch.float64) * 0.9 + 0.05

    def bce(p, side):
        cell = 8 // side
        tot, cnt = 0.0, 0
        for b in range(2):
            for r in range(side):
                for c in range(side):
                    inside = box[b, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell].sum() > 0
                    q = p[b, r, c].item()
                    tot += -math.log(q) if inside else -math.log(1 - q)
                    cnt += 1
        return tot / cnt

    want = (bce(p2, 2) + bce(p4, 4)) / 2
    got = box_supervision_loss([p2, p4], box)
    assert abs(got.item() - want) < 1e-12
    # local-caption samples only: image 1 alone
    want1 = box_supervision_loss([p2[1:], p4[1:]], box[1:])
    got1 = box_supervision_loss([p2, p4], box, is_local=torch.tensor([False, True]))
    assert abs(got1.item() - want1.item()) < 1e-12
    # no local sample: zero, still on the graph
    p = p2.clone().requires_grad_()
    zero = box_supervision_loss([p], box, is_local=torch.tensor([False, False]))
    assert zero.item() == 0.0 and zero.requires_grad
