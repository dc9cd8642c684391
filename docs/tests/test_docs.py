"""The documentation is complete: every public name is documented and on its API page, and
every relative link in every README resolves. Run by `uv run nox -s docs` after the build
(TRAINFORGE_SITE_DIR points at the built site)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))
from workspace import members, public_api  # noqa: E402

MEMBERS = members()
MODULES = {name: name.replace("-", "_") for name in MEMBERS}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def loader():
    return griffe.GriffeLoader()


@pytest.mark.parametrize("dist", list(MEMBERS))
def test_every_public_name_has_a_docstring(dist, loader):
    missing = []
    for name, identifier in public_api(MODULES[dist]):
        package = identifier.split(".", 1)[0]
        if package not in loader.modules_collection:
            loader.load(package)
        obj = loader.modules_collection[identifier]
        if not (obj.docstring and obj.docstring.value.strip()):
            missing.append(name)
    assert not missing, f"{dist}: public names without a docstring: {missing}"


@pytest.mark.parametrize("dist", list(MEMBERS))
def test_every_public_name_is_on_the_api_page(dist):
    site = os.environ.get("TRAINFORGE_SITE_DIR")
    if not site:
        pytest.skip("needs the built site (uv run nox -s docs)")
    folder = MEMBERS[dist]
    section = f"packages/{folder.name}" if folder.parent.name == "packages" else folder.name
    html = (Path(site) / section / "api" / "index.html").read_text()
    absent = [n for n, ident in public_api(MODULES[dist]) if f'id="{ident}"' not in html]
    assert not absent, f"{dist}: not on the API page: {absent}"


READMES = [ROOT / "README.md", *(folder / "README.md" for folder in MEMBERS.values())]


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_in_readmes_resolve(readme):
    broken = []
    for target in LINK.findall(readme.read_text()):
        if re.match(r"^[a-z]+:|^#", target):
            continue
        if not (readme.parent / target.partition("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{readme.relative_to(ROOT)}: links to missing files: {broken}"
