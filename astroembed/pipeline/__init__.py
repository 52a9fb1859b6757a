"""``astroembed run``: a pipeline from a TOML file, incremental and unattended (``run``):
its state file, what new or changed inputs require, the stages in order, the run's lock.

May import: every library package and :mod:`astroembed.compute` (which runs the Dask work).
Not the CLI.
"""
