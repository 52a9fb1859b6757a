"""The HATS catalog on disk. ``layout`` owns where its files lie and what they are named
(tile paths, ``ORDER/PIXEL``, ``hats.properties``, the shared constants); ``tiles`` writes
one tile (sorting, checks, tensor types, Parquet options); ``writer`` finishes a catalog
(metadata files, provenance, ``CatalogWriter``, in-place refresh; its docstring keeps what
was found about lsdb and hats); ``reader`` reads one (``CatalogInfo``, tiles, images);
``describe`` says what ``astroembed info`` reports (embedding columns, state, leftover work
files). Besides: its columns (``columns``), tile rewriting in batches (``rewrite``), the
catalog lock (``lock``), atomic writes and file modes (``atomic``), and which outputs may be
written or replaced (``outputs``, ``paths``).

Within the package ``layout`` imports no other catalog module but ``atomic``; ``reader``
imports ``layout``; ``tiles`` imports ``layout``; ``writer`` imports ``layout``, ``tiles``
and ``reader`` (and ``outputs`` when it claims or replaces a directory); ``describe``
imports ``layout`` and ``reader`` (and ``lock`` to name who holds a catalog being written).

May import: NumPy, pyarrow, the standard library, :mod:`astroembed.errors` and
:mod:`astroembed.stamps`. Not Dask, torch or onnxruntime, and nothing from the other
astroembed packages (``describe_catalog`` reads the last run's state through
:mod:`astroembed.pipeline.state`, imported when called).
"""
