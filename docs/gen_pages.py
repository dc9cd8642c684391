"""Generate the site's package pages from the workspace at build time (mkdocs-gen-files).

The landing page's catalogue comes from the README catalogue table (which release_check keeps
in step with the workspace) and each installed technique's technique.toml, the source that
`trainforge list` reads. Each package gets its README as its page and an API page listing
its ``__all__``. Relative links in a README are rewritten: to another generated page where
there is one, otherwise to the file in the repository.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[1]
REPO = "https://github.com/trainforge/trainforge/blob/main"
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "docs")]
import new_technique  # noqa: E402  (the README catalogue parser)
from workspace import members, public_api  # noqa: E402

LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


def page_for(folder: Path) -> str:
    """The generated page of a member's README."""
    if folder.parent.name == "packages":
        return f"packages/{folder.name}/index.md"
    return f"{folder.name}/index.md"


def rewrite_links(text: str, source: Path, pages: dict[Path, str], page: str) -> str:
    depth = page.count("/")

    def fix(match: re.Match[str]) -> str:
        label, target = match.groups()
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if resolved in pages:
            new = "../" * depth + pages[resolved] + (f"#{anchor}" if anchor else "")
        elif resolved.suffix.lower() in (".png", ".svg", ".jpg") and resolved.is_file():
            asset = f"{Path(page).parent}/{resolved.name}"
            with mkdocs_gen_files.open(asset, "wb") as out:
                out.write(resolved.read_bytes())
            new = resolved.name
        else:
            rel = resolved.relative_to(ROOT).as_posix()
            new = f"{REPO}/{rel}" + (f"#{anchor}" if anchor else "")
        return f"{label}({new})"

    return LINK.sub(fix, text)


def api_page(module_name: str, title: str) -> str:
    lines = [f"# {title} API", "", f"`import {module_name}`", ""]
    lines += [f"::: {identifier}\n" for _, identifier in public_api(module_name)]
    return "\n".join(lines)


def main() -> None:
    found = members()
    pages = {folder.resolve() / "README.md": page_for(folder) for folder in found.values()}
    pages[(ROOT / "README.md").resolve()] = "index.md"
    for name, folder in found.items():
        page = page_for(folder)
        text = (folder / "README.md").read_text()
        module = name.replace("-", "_")
        text += f"\n\n[API reference of `{module}`](api.md)\n"
        with mkdocs_gen_files.open(page, "w") as out:
            out.write(rewrite_links(text, folder / "README.md", pages, page))
        mkdocs_gen_files.set_edit_path(page, (folder / "README.md").relative_to(ROOT))
        api = page.replace("index.md", "api.md")
        with mkdocs_gen_files.open(api, "w") as out:
            out.write(api_page(module, name))
    with mkdocs_gen_files.open("index.md", "w") as out:
        out.write(landing_page(found, pages))
    with mkdocs_gen_files.open("SUMMARY.md", "w") as out:
        out.write(navigation(found))


def navigation(found: dict[str, Path]) -> str:
    """The site's navigation (mkdocs-literate-nav): techniques by slug, then the base."""
    lines = [
        "* [Home](index.md)",
        "* [Getting started](getting-started.md)",
        "* [Scaling out](scaling-out.md)",
        "* Techniques",
    ]
    for folder in found.values():
        if folder.parent.name == "packages":
            page = page_for(folder)
            lines += [f"    * [{folder.name}]({page})", f"        * [API]({page[:-8]}api.md)"]
    for title, folder in (("Kernels", "kernels"), ("Core", "shared")):
        lines += [f"* [{title}]({folder}/index.md)", f"    * [API]({folder}/api.md)"]
    return "\n".join(lines) + "\n"


def landing_page(found: dict[str, Path], pages: dict[Path, str]) -> str:
    from trainforge_core import available_techniques

    rows = new_technique.catalogue_rows((ROOT / "README.md").read_text())
    installed = available_techniques()
    lines = [
        "# trainforge",
        "",
        "Training-efficiency techniques from recent papers, each a small package you can drop",
        "into your own model: faithful to its paper and reference code, tested, with a method",
        "card and a `trainforge demo <slug>` on real data that ships offline.",
        "",
        "[Getting started](getting-started.md) · [Scaling out](scaling-out.md) · "
        "[Kernels](kernels/index.md) · [Core](shared/index.md)",
        "",
        "## Catalogue",
        "",
        "| technique | what it does | paper | install |",
        "|---|---|---|---|",
    ]
    for slug, row in rows.items():
        info = installed.get(slug)
        if row["status"] == "available" and info is not None:
            link = f"[`{slug}`](packages/{slug}/index.md)"
            arxiv = f"[arXiv:{info.paper.arxiv}]({info.paper.url})"
            paper = f"{info.paper.title} ({info.paper.year}, {arxiv})"
            install = f"`pip install {info.distribution}`"
            lines.append(f"| {link} | {info.summary} | {paper} | {install} |")
    lines += ["", "## Planned", "", "| slug | paper |", "|---|---|"]
    lines += [f"| `{s}` | {r['paper']} |" for s, r in rows.items() if r["status"] != "available"]
    return "\n".join(lines) + "\n"


main()
