"""The cross-match: sky geometry and HEALPix tiling (``sky``), the DESI quality cuts
(``quality``), staging and partitioning inputs into tiles with margins (``partition``),
positional and ID matching on plain arrays (``pairs``) and one tile's match (``tilematch``).

May import: NumPy, SciPy, pyarrow, astropy, :mod:`astroembed.readers`,
:mod:`astroembed.catalog`, :mod:`astroembed.config`, :mod:`astroembed.errors`. Not Dask
(tasks are run by :mod:`astroembed.compute`), torch or onnxruntime.
"""
