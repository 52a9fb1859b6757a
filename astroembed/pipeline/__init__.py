"""``astroembed run``: a pipeline from a TOML file, incremental and unattended: its state
file and what new or changed inputs require (``state``), the input files and the stages in
order (``stages``), the run with its lock and recorded outcome (``run``).

May import: every library package and :mod:`astroembed.compute` (which runs the Dask work).
Not the CLI.
"""
