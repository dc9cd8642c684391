import pytest

from trainforge_core import Paper, Technique, UnknownTechniqueError, get_technique
from trainforge_core.registry import available_techniques
from trainforge_core.testing import check_technique


def test_registered_technique_is_found(toy_registered):
    (info,) = available_techniques().values()
    assert (info.slug, info.title, info.paper) == ("toy-method", "Toy Method", toy_registered.paper)
    assert info.load() is toy_registered
    assert get_technique("toy-method") is toy_registered


def test_unknown_slug_suggests_close_names(toy_registered):
    with pytest.raises(UnknownTechniqueError, match="Did you mean: toy-method"):
        get_technique("toy-methd")
    with pytest.raises(UnknownTechniqueError, match="Installed: toy-method"):
        get_technique("gptq")
    with pytest.raises(UnknownTechniqueError, match="non-empty string"):
        get_technique("")


def test_run_demo_validates_and_saves(toy_registered, tmp_path):
    report = toy_registered.run_demo(quick=True, out_dir=tmp_path / "o", seed=2)
    assert report.details == {"quick": True, "seed": 2}
    assert (tmp_path / "o" / "report.json").exists()
    with pytest.raises(ValueError, match="seed"):
        toy_registered.run_demo(seed=-1)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        toy_registered.run_demo(out_dir=tmp_path / "f")


def test_conformance_check_passes_for_toy(toy_registered, tmp_path):
    report = check_technique("toy-method", tmp_path)
    assert report is not None and report.rows


def test_conformance_check_fails_for_bad_demo(toy_registered, monkeypatch, tmp_path):
    from trainforge_core.report import DemoReport

    bad = Technique(
        toy_registered.slug,
        "T",
        "S",
        toy_registered.paper,
        lambda q, o, s: DemoReport("toy-method", "claim"),
        "trainforge-core",
    )
    monkeypatch.setattr("trainforge_core.testing.get_technique", lambda slug: bad)
    with pytest.raises(AssertionError, match="no rows"):
        check_technique("toy-method", tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("slug", "Bad Slug", ValueError), ("title", "", ValueError), ("demo", 3, TypeError)],
)
def test_bad_technique_metadata(toy_registered, field, value, error):
    kwargs = {
        "slug": "ok",
        "title": "T",
        "summary": "S",
        "paper": toy_registered.paper,
        "demo": toy_registered.demo,
        "distribution": "trainforge-core",
        field: value,
    }
    with pytest.raises(error):
        Technique(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"year": 1800}, "year"), ({"arxiv": "abc"}, "arxiv"), ({"title": ""}, "title")],
)
def test_bad_paper(kwargs, match):
    base = {"title": "T", "authors": "A", "year": 2023, "arxiv": "2305.14342"}
    with pytest.raises(ValueError, match=match):
        Paper(**{**base, **kwargs})


def test_demo_must_return_report(toy_registered):
    bad = Technique("bad", "T", "S", toy_registered.paper, lambda q, o, s: {}, "trainforge-core")
    with pytest.raises(TypeError, match="not DemoReport"):
        bad.run_demo()


TOML = """slug = "probe-method"
distribution = "trainforge-core"
title = "Probe"
summary = "A package found through technique.toml."

[paper]
title = "A Probe Paper"
authors = "A. Author"
year = 2024
arxiv = "2401.00002"
"""


@pytest.fixture
def probe_package(tmp_path, monkeypatch):
    """An importable package with a technique.toml whose __init__ must never run."""
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (pkg / "technique.toml").write_text(TOML)
    monkeypatch.syspath_prepend(str(tmp_path))
    return pkg


def test_metadata_is_read_without_importing_the_package(probe_package):
    import sys

    from trainforge_core.technique import read_technique_metadata

    info = read_technique_metadata("probe_pkg", entry_point="probe_pkg.demo:T")
    assert (info.slug, info.title, info.paper.arxiv) == ("probe-method", "Probe", "2401.00002")
    assert info.version != "unknown" and "probe_pkg" not in sys.modules


def test_technique_from_package_takes_the_toml(probe_package, toy_registered):
    t = Technique.from_package("probe_pkg", toy_registered.demo)
    assert t.slug == "probe-method" and t.paper.title == "A Probe Paper"


def test_bad_metadata_is_a_clear_error(probe_package):
    from trainforge_core.technique import read_technique_metadata

    with pytest.raises(ValueError, match="not an installed package"):
        read_technique_metadata("no_such_package_here")
    (probe_package / "technique.toml").write_text(TOML.replace("[paper]", "[papers]"))
    with pytest.raises(ValueError, match="malformed technique metadata"):
        read_technique_metadata("probe_pkg")
    (probe_package / "technique.toml").unlink()
    with pytest.raises(FileNotFoundError, match="technique.toml"):
        read_technique_metadata("probe_pkg")
