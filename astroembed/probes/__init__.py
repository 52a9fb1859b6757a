"""What the embeddings know: cross-validated probes against baselines, saved probes, and
predictions written back into a catalog.

- :mod:`~astroembed.probes.metrics`: R^2, RMSE, the redshift metrics and the distribution
  metrics (coverage, width, PIT, CRPS), per fold and summarised.
- :mod:`~astroembed.probes.features`: the usable rows of a catalog as arrays (embeddings,
  photometry, rebinned spectra) and the baselines.
- :mod:`~astroembed.probes.estimators`: the unfitted estimator of each feature set and method,
  including the faiss k-NN for large catalogs.
- :mod:`~astroembed.probes.uncertainty`: each row's predictive distribution, calibrated
  split-conformally on held-out residuals (quantiles, intervals, PIT).
- :mod:`~astroembed.probes.crossval`: the ``probe`` run: checks, folds (or the AstroCLIP
  80/20 split), cross-validation, cross-calibration.
- :mod:`~astroembed.probes.report`: what ``probe --out`` writes.
- :mod:`~astroembed.probes.saved`: a probe saved without pickle, and loaded to predict.
- :mod:`~astroembed.probes.predict`: ``predict``, a saved probe's column added to every tile.

May import: NumPy, scikit-learn, pyarrow, faiss (optional), :mod:`astroembed.catalog`,
:mod:`astroembed.config`, :mod:`astroembed.errors`, :mod:`astroembed.plots`,
:mod:`astroembed.similarity` (the faiss IVF index the k-NN probe shares with ``search``) and
:mod:`astroembed.stamps` (the version a saved probe records). Not Dask or torch.
"""
