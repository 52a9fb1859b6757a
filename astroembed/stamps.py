"""The stamps astroembed's outputs carry: when they were made and by which astroembed.

One implementation of each, so catalogs, run reports, probes and models agree on the format.
"""

from __future__ import annotations

from datetime import datetime, timezone

#: The creation-date format of ``hats.properties`` (``2025-01-31T12:00UTC``), as hats writes it.
HATS_DATE = "%Y-%m-%dT%H:%M%Z"


def utc_now(fmt: str | None = None) -> str:
    """The time now in UTC: ISO 8601 to the second, or formatted with ``fmt`` (strftime)."""
    now = datetime.now(tz=timezone.utc)
    return now.isoformat(timespec="seconds") if fmt is None else now.strftime(fmt)


def astroembed_version() -> str:
    """The package version (imported late: the modules that stamp outputs are imported by the
    package itself, which defines the version)."""
    from astroembed import __version__

    return __version__
