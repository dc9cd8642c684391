"""Operation counts by layer type and the compute-energy estimate of one forward pass.

ShiftAddViT reports energy from unit energies per operation in 45 nm CMOS (Horowitz,
"Computing's energy problem", ISSCC 2014; the shift energies from ShiftAddNet), the table the
reference also uses (GATECH-EIC/ShiftAddViT:pvt/hw_utils.py ``get_unit_energy``: 32-bit mult
3.7 pJ, add 0.9 pJ, shift 0.13 pJ; 8-bit 0.2 / 0.03 / 0.024 pJ). :func:`energy_estimate`
counts the multiplications, additions and shifts of one forward pass with forward hooks, per
layer type, and prices them with that table.

What is counted, per layer type (``B`` batch, ``T`` tokens, ``N`` tokens per sample):

- ``linear`` (dense ``nn.Linear``, including the Mult. experts on the tokens routed to them):
  ``T in out`` mults and ``T out (in - 1 + bias)`` adds;
- ``conv`` (``nn.Conv2d``): per output element ``K = in/groups kh kw`` mults and
  ``K - 1 + bias`` adds; ``token conv``: the binary attention's ``k x 1`` depthwise
  convolution over tokens, ``B N C k`` mults and as many adds;
- ``attention`` (softmax attention of timm ViT / PVTv2): ``q k^T`` and ``attn v``, ``2 B H N
  Nk d`` mults and ``B H N (Nk (d - 1) + d (Nk - 1))`` adds (the softmax itself is not counted);
- ``binary attention``: ``c^T v`` and ``c (c^T v)`` are sums of the value rows / state rows
  selected by the set bits: ``d`` adds per set bit and product, counted from the actual codes;
- ``hashing`` (KSH): the anchor distances and the code projections, ``B H N m (d + nbits)``
  mults and ``B H N (m (d - 1) + nbits (m - 1))`` adds;
- ``shift`` (``ShiftLinear`` and the Shift experts): ``T in out`` shifts and
  ``T out (in - 1 + bias)`` adds;
- ``router`` (the MoE gate ``x W_gate``): ``T in E`` mults and ``T E (in - 1)`` adds.

Elementwise work (norms, activations, scaling, residual adds, the softmax) is not counted,
and neither is data movement: the reference additionally simulates DRAM/buffer traffic with a
dataflow tiling model (pvt/hw_utils.py), which this package does not reproduce. The estimate
is therefore compute energy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "UNIT_ENERGY_PJ",
    "EnergyReport",
    "energy_estimate",
]

UNIT_ENERGY_PJ: dict[str, dict[str, float]] = {
    # Horowitz ISSCC 2014 (45 nm) mult/add; shift from ShiftAddNet. The 32-bit and 8-bit
    # columns are the reference's pvt/hw_utils.py get_unit_energy(num_bits=32 / 8).
    "fp32": {"mult": 3.7, "add": 0.9, "shift": 0.13},
    "fp16": {"mult": 1.1, "add": 0.4, "shift": 0.057},
    "int32": {"mult": 3.1, "add": 0.1, "shift": 0.13},
    "int8": {"mult": 0.2, "add": 0.03, "shift": 0.024},
}
"""Unit energies (pJ per operation) by precision; shifts at the matching integer width."""

KINDS = (
    "linear",
    "conv",
    "token conv",
    "attention",
    "binary attention",
    "hashing",
    "shift",
    "router",
)
_OPS = ("mult", "add", "shift")


def _count_ops(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """Operations of one forward pass, by layer type (:data:`KINDS`) and op (mult/add/shift)."""
    from trainforge_shiftaddvit.attention import AddLinearAttention, BinaryCoder
    from trainforge_shiftaddvit.convert import _timm_classes
    from trainforge_shiftaddvit.moe import MultShiftMoE
    from trainforge_shiftaddvit.shift import ShiftLinear

    classes = _timm_classes()
    counts = {k: dict.fromkeys(_OPS, 0) for k in KINDS}

    def add(kind: str, mult: int = 0, adds: int = 0, shift: int = 0) -> None:
        c = counts[kind]
        c["mult"] += int(mult)
        c["add"] += int(adds)
        c["shift"] += int(shift)

    def lin_hook(m, inp, out):
        t = inp[0].numel() // m.in_features
        macs = t * m.in_features * m.out_features
        adds = t * m.out_features * (m.in_features - 1 + (m.bias is not None))
        if isinstance(m, ShiftLinear):
            add("shift", adds=adds, shift=macs)
        else:
            add("linear", mult=macs, adds=adds)

    def conv_hook(m, inp, out):
        kh, kw = m.kernel_size
        k = (m.in_channels // m.groups) * kh * kw
        add("conv", mult=out.numel() * k, adds=out.numel() * (k - 1 + (m.bias is not None)))

    def router_hook(m, inp, out):
        t = inp[0].numel() // m.in_features
        e = len(m.experts)
        add("router", mult=t * m.in_features * e, adds=t * e * (m.in_features - 1))

    def vit_attn_hook(m, inp, out):
        B, N, _ = inp[0].shape
        _softmax(B, m.num_heads, N, N, m.head_dim)

    def pvt_attn_hook(m, inp, out):
        B, N, _ = inp[0].shape
        H, W = inp[1] if len(inp) > 1 else (N, 1)
        sr = m.sr.stride[0] if m.sr is not None else 1
        nk = (H // sr) * (W // sr) if sr > 1 else N
        _softmax(B, m.num_heads, N, nk, m.head_dim)

    def _softmax(B, H, N, nk, d):
        add(
            "attention", mult=2 * B * H * N * nk * d, adds=B * H * N * (nk * (d - 1) + d * (nk - 1))
        )

    def binary_attn_hook(m, inp, out):
        B, N, C = inp[0].shape
        k = m.dconv.kernel_size[0]
        add("token conv", mult=B * N * C * k, adds=B * N * C * k)

    def coder_hook(m, inp, out):
        x = inp[0]
        d = x.shape[-1]
        rows = x.numel() // d  # B H N
        if m.mode == "ksh":
            add(
                "hashing",
                mult=rows * m.m * (d + m.nbits),
                adds=rows * (m.m * (d - 1) + m.nbits * (m.m - 1)),
            )
        # c^T v and c (c^T v): d additions per set bit in each product
        add("binary attention", adds=2 * int(out.detach().sum()) * d)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Linear | ShiftLinear):
            hooks.append(m.register_forward_hook(lin_hook))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, MultShiftMoE):
            hooks.append(m.register_forward_hook(router_hook))
        elif isinstance(m, AddLinearAttention):
            hooks.append(m.register_forward_hook(binary_attn_hook))
        elif isinstance(m, BinaryCoder):
            hooks.append(m.register_forward_hook(coder_hook))
        elif isinstance(m, classes["pvt"]):
            hooks.append(m.register_forward_hook(pvt_attn_hook))
        elif isinstance(m, classes["vit"]):
            hooks.append(m.register_forward_hook(vit_attn_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return counts


@dataclass
class EnergyReport:
    """Operation counts and compute energy (pJ) of one forward pass, by layer type."""

    precision: str
    unit_pj: dict[str, float]
    ops: dict[str, dict[str, int]] = field(default_factory=dict)

    def energy_pj(self, kind: str | None = None) -> float:
        """Energy in pJ of one layer type, or of the whole pass when ``kind`` is None."""
        kinds = list(self.ops) if kind is None else [kind]
        if kind is not None and kind not in self.ops:
            raise ValueError(f"EnergyReport: kind must be one of {list(self.ops)}, got {kind!r}")
        return sum(self.ops[k][op] * self.unit_pj[op] for k in kinds for op in _OPS)

    @property
    def total_pj(self) -> float:
        """Energy of the whole forward pass in pJ."""
        return self.energy_pj()

    def totals(self) -> dict[str, int]:
        """Operations by op kind over all layer types."""
        return {op: sum(c[op] for c in self.ops.values()) for op in _OPS}

    def table(self) -> str:
        """A markdown table: operations and energy per layer type, then the total."""
        lines = [
            f"| layer type | mult | add | shift | energy (uJ, {self.precision}) |",
            "|---|---|---|---|---|",
        ]
        for kind, c in self.ops.items():
            if any(c.values()):
                lines.append(
                    f"| {kind} | {c['mult']:,} | {c['add']:,} | {c['shift']:,} | "
                    f"{self.energy_pj(kind) / 1e6:.3f} |"
                )
        t = self.totals()
        lines.append(
            f"| **total** | {t['mult']:,} | {t['add']:,} | {t['shift']:,} | "
            f"**{self.total_pj / 1e6:.3f}** |"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def energy_estimate(
    model: nn.Module,
    x: torch.Tensor,
    precision: str = "fp32",
    unit_pj: dict[str, float] | None = None,
) -> EnergyReport:
    """Count the operations of ``model(x)`` by layer type and price them in pJ.

    Args:
        model: any module; timm ViT / PVTv2 attention, ``nn.Linear``, ``nn.Conv2d`` and this
            package's modules are counted (see the module docstring), the rest is not.
        x: one input batch (the forward pass runs under ``torch.no_grad``; the model's
            train/eval mode is left as it is).
        precision: a key of :data:`UNIT_ENERGY_PJ` (``"fp32"`` as the reference's 32-bit
            estimate, ``"fp16"``, ``"int32"``, ``"int8"``).
        unit_pj: your own ``{"mult", "add", "shift"}`` energies in pJ instead of the table.

    Returns an :class:`EnergyReport` (``.total_pj``, ``.energy_pj(kind)``, ``.table()``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"energy_estimate: model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"energy_estimate: x must be a torch.Tensor, got {type(x).__name__}")
    if unit_pj is None:
        if precision not in UNIT_ENERGY_PJ:
            raise ValueError(
                f"energy_estimate: precision must be one of {sorted(UNIT_ENERGY_PJ)}, "
                f"got {precision!r}"
            )
        units = dict(UNIT_ENERGY_PJ[precision])
    else:
        if not isinstance(unit_pj, dict) or set(unit_pj) != set(_OPS):
            raise ValueError(
                f"energy_estimate: unit_pj must map exactly {_OPS} to pJ, got {unit_pj!r}"
            )
        units = {k: float(v) for k, v in unit_pj.items()}
        if any(not v >= 0 or v == float("inf") for v in units.values()):
            raise ValueError(f"energy_estimate: unit energies must be finite and >= 0: {unit_pj}")
        precision = "custom"
    return EnergyReport(precision=precision, unit_pj=units, ops=_count_ops(model, x))
