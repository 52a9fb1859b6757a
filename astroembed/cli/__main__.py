"""``python -m astroembed.cli``: the same as the ``astroembed`` command."""

from astroembed.cli.app import main

main()
