"""Discovery of installed techniques through the ``trainforge.techniques`` entry points."""

from __future__ import annotations

import difflib
import logging
from importlib import metadata

from trainforge_core.errors import UnknownTechniqueError
from trainforge_core.technique import Technique

ENTRY_POINT_GROUP = "trainforge.techniques"
log = logging.getLogger(__name__)


def available_techniques() -> dict[str, Technique]:
    """Every installed technique, by slug, sorted. Broken entry points are logged, not raised."""
    found: dict[str, Technique] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            technique = ep.load()
        except Exception:  # a broken plugin must not hide the others
            log.exception("could not load technique entry point %r", ep.value)
            continue
        if not isinstance(technique, Technique):
            log.error("entry point %r is a %s, not a Technique", ep.value, type(technique).__name__)
            continue
        if technique.slug != ep.name:
            log.error(
                "entry point %r names slug %r but the Technique says %r",
                ep.value,
                ep.name,
                technique.slug,
            )
            continue
        found[technique.slug] = technique
    return dict(sorted(found.items()))


def get_technique(slug: str) -> Technique:
    """The installed technique named ``slug``, or an error that suggests close names."""
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
