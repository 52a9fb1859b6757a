"""The ``astroembed`` command line: parse, call one public function, render.

Nothing imports this package. Heavy libraries are imported inside commands so that
``astroembed --help`` is instant.
"""

from astroembed.cli.app import app, main  # noqa: F401
