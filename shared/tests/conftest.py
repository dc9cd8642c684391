from __future__ import annotations

from importlib import metadata

import pytest

from trainforge_core import DemoReport, Paper, Technique
from trainforge_core.registry import ENTRY_POINT_GROUP


def _demo(quick, out_dir, seed):
    report = DemoReport(slug="toy-method", claim="Toys train faster.")
    report.add("held-out loss", 2.0, 1.5 + 0.01 * seed, "nats")
    report.add_curve("baseline", [1, 2, 3], [3.0, 2.5, 2.0])
    report.add_curve("toy", [1, 2, 3], [3.0, 2.0, 1.5])
    return report


TOY = Technique(
    slug="toy-method",
    title="Toy Method",
    summary="A registered technique used by core's tests.",
    paper=Paper("A Toy Paper", "A. Author, B. Author", 2024, "2401.00001"),
    demo=_demo,
    distribution="trainforge-core",
)


@pytest.fixture
def toy_registered(monkeypatch):
    """Register TOY under the entry-point group, as an installed package would."""
    ep = metadata.EntryPoint(name="toy-method", value="conftest_toy:TOY", group=ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def entry_points(**params):
        if params.get("group") == ENTRY_POINT_GROUP:
            return metadata.EntryPoints([ep])
        return real(**params)

    monkeypatch.setattr(metadata.EntryPoint, "load", lambda self: TOY)
    monkeypatch.setattr(metadata, "entry_points", entry_points)
    return TOY
