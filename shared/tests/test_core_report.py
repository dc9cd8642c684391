import json
import math

import pytest

from trainforge_core.report import DemoReport, MetricRow


def make_report():
    r = DemoReport(slug="x", claim="It helps.", baseline_name="AdamW", technique_name="Sophia")
    r.add("loss", 3.0, 2.5, "nats")
    r.add("throughput", 100, 120, "tok/s", better="higher")
    r.add("params", 1_000_000, 1_000_000, "", better="none")
    return r


def test_table_aligns_and_formats_numbers():
    lines = make_report().table().splitlines()
    assert lines[0].split() == ["metric", "AdamW", "Sophia", "unit", "better"]
    assert "1.000e+06" in lines[-1]
    col = lines[0].index("AdamW")  # every row's baseline value starts under its header
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in lines[2:])


def test_technique_wins_follows_direction():
    rows = make_report().rows
    assert [r.technique_wins for r in rows] == [True, True, None]


def test_save_writes_json_and_plot(tmp_path):
    r = make_report()
    r.add_curve("AdamW", [0, 1], [3.0, 2.9])
    written = r.save(tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["rows"][0] == {
        "metric": "loss",
        "baseline": 3.0,
        "technique": 2.5,
        "unit": "nats",
        "better": "lower",
    }
    assert "torch" in data["environment"]
    png = tmp_path / "out" / "curves.png"
    assert png in written and png.read_bytes()[:4] == b"\x89PNG"


def test_numpy_and_torch_scalars_become_floats():
    import numpy as np
    import torch

    r = DemoReport(slug="x", claim="c")
    row = r.add("m", np.float32(1.5), torch.tensor(2.5))
    assert (row.baseline, row.technique) == (1.5, 2.5)
    assert type(row.baseline) is float


def test_nan_is_kept_and_printed():
    r = DemoReport(slug="x", claim="c")
    r.add("m", math.nan, 1.0)
    assert "nan" in r.table()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"metric": "", "baseline": 1.0, "technique": 1.0}, ValueError),
        ({"metric": "m", "baseline": 1.0, "technique": 1.0, "better": "up"}, ValueError),
        ({"metric": "m", "baseline": "1", "technique": 1.0}, TypeError),
    ],
)
def test_bad_rows(kwargs, error):
    with pytest.raises(error):
        MetricRow(**kwargs)


def test_bad_add_and_curve_and_save(tmp_path):
    r = DemoReport(slug="x", claim="c")
    with pytest.raises(TypeError, match="numbers"):
        r.add("m", "a", 1.0)
    with pytest.raises(ValueError, match="x has 2 points but y has 1"):
        r.add_curve("c", [1, 2], [1])
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        r.save(file)
