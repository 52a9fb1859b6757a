"""What the embeddings know: cross-validated probes against baselines, saved probes, and
predictions written back into a catalog (``probe``).

May import: NumPy, scikit-learn, pyarrow, faiss (optional), :mod:`astroembed.catalog`,
:mod:`astroembed.config`, :mod:`astroembed.errors`, :mod:`astroembed.plots`. Not Dask or
torch.
"""
