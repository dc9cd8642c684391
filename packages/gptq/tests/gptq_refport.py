"""An independent, literal re-statement of ``IST-DASLab/gptq:gptq.py:fasterquant`` and
``quant.py`` (written here, in the reference's own untransposed layout and matmul form),
used as the golden reference by the tests. It returns Q, the summed loss and g_idx / scales
the way AutoGPTQ's variant reports them, then the damped Hessian, the order and the
per-element losses (original column order)."""

from __future__ import annotations

import torch


def ref_find_params(x, maxq, sym):
    tmp = torch.zeros(x.shape[0], dtype=x.dtype)
    xmin = torch.minimum(x.min(1)[0], tmp)
    xmax = torch.maximum(x.max(1)[0], tmp)
    if sym:
        xmax = torch.maximum(torch.abs(xmin), xmax)
        neg = xmin < 0
        if torch.any(neg):
            xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1
    xmax[both] = +1
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale.reshape(-1, 1), zero.reshape(-1, 1)


def ref_quantize(x, scale, zero, maxq):
    q = torch.clamp(torch.round(x / scale) + zero, 0, maxq)
    return scale * (q - zero)


def ref_fasterquant(
    W, H, bits, sym, blocksize=128, percdamp=0.01, groupsize=-1, actorder=False, static_groups=False
):
    W = W.clone()
    H = H.clone()
    columns = W.shape[1]
    maxq = 2**bits - 1
    scale, zero = ref_find_params(W, maxq, sym)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    scales = []
    if static_groups:
        groups = []
        for i in range(0, columns, groupsize):
            groups.append(ref_find_params(W[:, i : i + groupsize], maxq, sym))
            scales.append(groups[-1][0])
    perm = None
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        invperm = torch.argsort(perm)
    Losses = torch.zeros_like(W)
    Q = torch.zeros_like(W)
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    Hd = H.clone()
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    Hinv = torch.linalg.cholesky(H, upper=True)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            if groupsize != -1:
                if not static_groups:
                    if (i1 + i) % groupsize == 0:
                        scale, zero = ref_find_params(W[:, i1 + i : i1 + i + groupsize], maxq, sym)
                        scales.append(scale)
                else:
                    idx = i1 + i
                    if actorder:
                        idx = perm[idx]
                    scale, zero = groups[idx // groupsize]
            q = ref_quantize(w.unsqueeze(1), scale, zero, maxq).flatten()
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        Q[:, i1:i2] = Q1
        Losses[:, i1:i2] = Losses1 / 2
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    gs = groupsize if groupsize != -1 else columns
    if static_groups and actorder:
        g_idx = torch.tensor([int(perm[i]) // gs for i in range(columns)], dtype=torch.int32)
    else:
        g_idx = torch.tensor([i // gs for i in range(columns)], dtype=torch.int32)
    Wperm = W  # noqa: F841 (kept for symmetry with the reference)
    if actorder:
        Q = Q[:, invperm]
        g_idx = g_idx[invperm]
        Losses = Losses[:, invperm]
    if not scales:
        scales.append(scale)
    loss = float(torch.sum(Losses))
    return Q, loss, g_idx, torch.cat(scales, dim=1).t(), Hd, perm, Losses
