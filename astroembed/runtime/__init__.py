"""The embedding runtime: preprocessing shared with training (``preprocess``), ONNX model files
and their contract (``modelfile``), and embedding a catalog tile by tile (``embedding``).

May import: onnxruntime, NumPy, pyarrow, :mod:`astroembed.catalog`, :mod:`astroembed.config`,
:mod:`astroembed.errors`. Never torch or Dask: a data centre embeds with onnxruntime alone.
"""
