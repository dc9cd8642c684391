"""Discovery of installed techniques through the ``trainforge.techniques`` entry points.

Listing reads each package's ``technique.toml`` (no import of the technique, torch or
transformers); only :func:`get_technique` and running a demo import a technique.
"""

from __future__ import annotations

import difflib
import logging
from importlib import metadata

from trainforge_core.errors import UnknownTechniqueError
from trainforge_core.technique import Technique, TechniqueInfo, read_technique_metadata

ENTRY_POINT_GROUP = "trainforge.techniques"
# Other installed packages add lines to `trainforge doctor` through this group: each entry
# point is a function returning (name, value, note) rows (trainforge-kernels registers one).
DOCTOR_ENTRY_POINT_GROUP = "trainforge.doctor"
log = logging.getLogger(__name__)


def _info(ep: metadata.EntryPoint) -> TechniqueInfo:
    package = ep.module.split(".", 1)[0]
    try:
        return read_technique_metadata(package, entry_point=ep.value)
    except (FileNotFoundError, ValueError):
        # A package without technique.toml (older or third-party): import it to find out.
        log.debug("no readable technique.toml for %r; importing %r", package, ep.value)
        technique = ep.load()
        if not isinstance(technique, Technique):
            raise TypeError(f"is a {type(technique).__name__}, not a Technique") from None
        return TechniqueInfo(
            technique.slug,
            technique.title,
            technique.summary,
            technique.paper,
            technique.distribution,
            ep.value,
        )


def available_techniques() -> dict[str, TechniqueInfo]:
    """Every installed technique's metadata, by slug, sorted; nothing is imported.

    Broken entry points are logged, not raised. ``info.load()`` or ``info.run_demo()``
    imports the technique itself.
    """
    found: dict[str, TechniqueInfo] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            info = _info(ep)
        except Exception:  # a broken plugin must not hide the others
            log.exception("could not read technique entry point %r", ep.value)
            continue
        if info.slug != ep.name:
            log.error(
                "entry point %r names slug %r but its metadata says %r",
                ep.value,
                ep.name,
                info.slug,
            )
            continue
        found[info.slug] = info
    return dict(sorted(found.items()))


def find_technique(slug: str) -> TechniqueInfo:
    """The metadata of the installed technique ``slug`` (nothing imported), or an error
    that suggests close names."""
    if not isinstance(slug, str) or not slug:
        raise UnknownTechniqueError(f"slug must be a non-empty string, got {slug!r}")
    techniques = available_techniques()
    if slug in techniques:
        return techniques[slug]
    close = difflib.get_close_matches(slug, list(techniques), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    installed = ", ".join(techniques) or "none"
    raise UnknownTechniqueError(
        f"unknown technique {slug!r}.{hint} Installed: {installed}. "
        "Each technique is its own package: pip install trainforge-<slug>"
    )


def get_technique(slug: str) -> Technique:
    """The installed technique named ``slug``, imported (only that one), with its demo."""
    return find_technique(slug).load()


def doctor_rows() -> list[tuple[str, str, str]]:
    """(name, value, note) rows that installed packages add to `trainforge doctor`."""
    rows: list[tuple[str, str, str]] = []
    for ep in metadata.entry_points(group=DOCTOR_ENTRY_POINT_GROUP):
        try:
            rows.extend(ep.load()())
        except Exception as exc:  # a broken plugin must not hide the rest of the report
            rows.append((ep.name, "error", f"{type(exc).__name__}: {exc}"))
    return rows
