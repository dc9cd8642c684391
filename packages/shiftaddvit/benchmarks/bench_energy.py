"""Compute-energy estimate of pvt_v2_b0 (224 x 224, batch 1): original vs reparameterised.

Recipe (from the repository root; a few seconds, counts do not depend on the machine):

    uv run python packages/shiftaddvit/benchmarks/bench_energy.py [--precision fp32]

Prints ``energy_estimate``'s table (operations per layer type, energy with the reference's
45 nm unit energies) for the original model and for the three reparameterisations
(attention only, all linears shift, Mult./Shift MoE). The MoE's routing is that of a freshly
initialised router (about half the tokens to each expert); a router trained with the
latency-aware loss sends about 60% to the Shift experts, which lowers its energy further.
Weights are random (no download): the counts depend on the shapes only, except the binary
attention's additions (set bits) and the MoE routing.
"""

from __future__ import annotations

import argparse
import copy

import torch


def main(argv: list[str] | None = None) -> None:
    import timm

    from trainforge_shiftaddvit import ShiftAddConfig, energy_estimate, reparameterize_vit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    base = timm.create_model("pvt_v2_b0", pretrained=False, num_classes=1000).eval()
    x = torch.randn(1, 3, 224, 224)
    ref = energy_estimate(base, x, precision=args.precision)
    print(f"## original pvt_v2_b0: {ref.total_pj / 1e6:.1f} uJ\n\n{ref.table()}")
    for linears in ("none", "shift", "moe"):
        model = copy.deepcopy(base)
        reparameterize_vit(model, ShiftAddConfig(linears=linears, ksh_iters=10))
        with torch.no_grad():
            model.train()(x)  # fits the KSH codes
        rep = energy_estimate(model.eval(), x, precision=args.precision)
        saved = 100 * (1 - rep.total_pj / ref.total_pj)
        print(
            f"\n## linears={linears!r}: {rep.total_pj / 1e6:.1f} uJ ({saved:.1f}% less)\n\n"
            f"{rep.table()}"
        )


if __name__ == "__main__":
    main()
