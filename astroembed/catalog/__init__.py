"""The catalog on disk: a HATS collection of a main catalog, a pixel extension and a margin
catalog. ``layout`` owns where its files lie and what they are named (the parts, tile paths,
``ORDER/PIXEL``, ``.properties`` files, ``ROW_ID``, the shared constants); ``tiles`` writes
one tile (sorting, numbering, the split into main and pixel files, tensor types, Parquet
options); ``writer`` finishes a catalog (metadata files, provenance, the collection's files,
``CatalogWriter``, in-place refresh; its docstring keeps what was found about lsdb and hats);
``margin`` builds the margin catalog; ``reader`` reads one (``CatalogInfo``, tiles with their
pixels, the pixels of chosen rows, images); ``describe`` says what ``astroembed info``
reports (embedding columns, state, parts, leftover work files); ``convert`` turns a catalog of
the earlier single-table layout into a collection. Besides: its columns (``columns``), tile
rewriting in batches (``rewrite``), the catalog lock (``lock``), atomic writes and file modes
(``atomic``), and which outputs may be written or replaced (``outputs``, ``paths``).

Within the package ``layout`` imports no other catalog module but ``atomic``; ``reader``
imports ``layout`` (and ``rewrite`` to stream a tile with its pixels); ``tiles`` imports
``layout``; ``writer`` imports ``layout``, ``tiles`` and ``reader`` (and ``outputs`` when it
claims or replaces a directory, ``margin`` when it finishes one); ``describe`` imports
``layout`` and ``reader`` (and ``lock`` to name who holds a catalog being written).

May import: NumPy, pyarrow, the standard library, :mod:`astroembed.errors` and
:mod:`astroembed.stamps`; hats inside the functions that write metadata files (so that
importing the package, and the CLI, stays fast). Not Dask, torch or onnxruntime, and
nothing from the other astroembed packages but two, imported when called:
``describe_catalog`` reads the last run's state through :mod:`astroembed.pipeline.state`,
and ``margin`` uses the HEALPix margin geometry of :mod:`astroembed.matching.sky` (pure
NumPy).
"""
