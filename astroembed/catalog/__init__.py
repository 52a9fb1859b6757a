"""The HATS catalog on disk: layout, writer and reader (``hats``), its columns (``columns``),
tile rewriting in batches (``rewrite``), the catalog lock (``lock``), atomic writes and file
modes (``atomic``), and which outputs may be written or replaced (``outputs``, ``paths``).

May import: NumPy, pyarrow, the standard library, :mod:`astroembed.errors`. Not Dask, torch
or onnxruntime, and nothing from the other astroembed packages.
"""
