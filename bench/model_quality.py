"""What the encoders know, measured on a held-out simulated survey.

    python bench/model_quality.py --catalog HELDOUT_CAT [--model ONNXDIR] [--json OUT.json]

HELDOUT_CAT is a cross-matched catalog of a survey the model never saw (another seed). The
embeddings are computed here with onnxruntime directly on the preprocessed inputs; redshift is
predicted by 5-fold k-NN (distance-weighted, k = 64, standardised features, as AstroCLIP's
zero-shot evaluation) from: spectrum embeddings, image embeddings, three PCAs of the spectra
(32 components of the observed flux as stored; 32 components of the encoder's input, binned
and z-scored; ``astroembed probe``'s baseline, 16 components of the spectra binned by 32 and
scaled to unit norm, the strongest of the three), each PCA fitted on the training folds only,
and the g, r, z magnitudes and colours alone (AstroCLIP's photometry baseline).
k-NN scores grow with the number of reference objects (neighbours are closer), so the
spectrum features are also scored on random subsets of the held-out rows
(``reference_size``). Retrieval: for each object, the rank of its own partner among all
objects of the other modality by cosine similarity.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchpaths import portable

from astroembed.catalog.reader import image_array, read_catalog_info, read_tile
from astroembed.runtime.modelfile import find_encoders, open_encoder
from astroembed.runtime.preprocess import image_inputs, spectrum_inputs
from astroembed.probes.estimators import PCA_COMPONENTS
from astroembed.probes.features import SPECTRUM_BIN, rebin_spectra


def load(catalog: str, flux_cols: list[str]) -> dict:
    """Images, spectra, Z and photometry of every row with an image, a spectrum and ZWARN 0."""
    info = read_catalog_info(catalog)
    tables = [read_tile(catalog, *t, columns=info.schema.names) for t in info.tiles]
    table = pa.concat_tables(tables)
    table = table.filter(pc.and_(pc.equal(table["ZWARN"], 0), pc.is_valid(table["flux"])))
    return {"table": table, "image": image_array(table["image"]),
            "flux": np.stack(table["flux"].to_numpy(zero_copy_only=False)),
            "ivar": np.stack(table["ivar"].to_numpy(zero_copy_only=False)),
            "z": table["Z"].to_numpy()}


def photometry(table: pa.Table) -> np.ndarray:
    """g, r, z magnitudes (MW-corrected) and g-r, r-z colours."""
    mags = []
    for band in "GRZ":
        name = f"FLUX_{band}_left" if f"FLUX_{band}_left" in table.column_names else f"FLUX_{band}"
        flux = table[name].to_numpy().astype(float)
        mw = table[f"MW_TRANSMISSION_{band}"].to_numpy().astype(float)
        mags.append(22.5 - 2.5 * np.log10(np.clip(flux / mw, 1e-3, None)))
    g, r, z = mags
    return np.stack([g, r, z, g - r, r - z], axis=1)


def knn_redshift(x: np.ndarray, z: np.ndarray, k: int = 64, seed: int = 0,
                 pca: int = 0) -> dict:
    """5-fold CV k-NN: R^2 (pooled and fold spread), sigma_NMAD, outlier fraction, bias.
    ``pca`` > 0: the features are first reduced to that many principal components, fitted on
    each training fold (as ``astroembed probe`` does), so the held-out fold stays unseen."""
    pred = np.empty_like(z)
    r2s = []
    for train, test in KFold(5, shuffle=True, random_state=seed).split(x):
        steps = [PCA(pca, random_state=0)] if pca else []
        model = make_pipeline(*steps, StandardScaler(), KNeighborsRegressor(k, weights="distance"))
        model.fit(x[train], z[train])
        pred[test] = model.predict(x[test])
        r2s.append(1 - np.sum((pred[test] - z[test]) ** 2) / np.sum((z[test] - z[test].mean()) ** 2))
    dz = (pred - z) / (1 + z)
    return {"r2": float(1 - np.sum((pred - z) ** 2) / np.sum((z - z.mean()) ** 2)),
            "r2_std": float(np.std(r2s)),
            "sigma_nmad": float(1.48 * np.median(np.abs(dz - np.median(dz)))),
            "outlier_fraction": float(np.mean(np.abs(dz) > 0.15)),
            "bias": float(np.median(dz))}


def by_reference_size(features: dict[str, tuple[np.ndarray, int]], z: np.ndarray,
                      sizes: tuple[int, ...] = (5000, 10000), seed: int = 0) -> dict:
    """k-NN R^2 and sigma_NMAD of each feature set (features, PCA components or 0) on random
    subsets of ``sizes`` rows (the same rows for every feature set); sizes not below the
    number of rows are skipped."""
    order = np.random.default_rng(seed).permutation(len(z))
    out = {}
    for n in [s for s in sizes if s < len(z)]:
        rows = np.sort(order[:n])
        out[str(n)] = {}
        for name, (x, pca) in features.items():
            r = knn_redshift(x[rows], z[rows], seed=seed, pca=pca)
            out[str(n)][name] = {"r2": r["r2"], "sigma_nmad": r["sigma_nmad"]}
    return out


def retrieval(a: np.ndarray, b: np.ndarray) -> dict:
    """Top-1, top-10 and top-1% rate of finding ``b[i]`` for query ``a[i]``."""
    sims = a @ b.T
    rank = (sims > np.diag(sims)[:, None]).sum(axis=1)
    return {"top1": float(np.mean(rank < 1)), "top10": float(np.mean(rank < 10)),
            "top1pct": float(np.mean(rank < max(1, round(0.01 * len(b)))))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--model", default=None, help="ONNX model directory (default model)")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    t0 = time.time()
    data = load(args.catalog, [])
    files = find_encoders(args.model)
    encoders = {m: open_encoder(p) for m, p in files.items()}
    img, ok_i = image_inputs(data["image"], encoders["image"].info.preprocessing)
    spec, ok_s = spectrum_inputs(data["flux"], data["ivar"], encoders["spectrum"].info.preprocessing)
    ok = ok_i & ok_s
    zi = np.concatenate([encoders["image"].run({"image": img["image"][ok][i:i + 512]})
                         for i in range(0, ok.sum(), 512)])
    zs = np.concatenate([encoders["spectrum"].run({k: v[ok][i:i + 512] for k, v in spec.items()})
                         for i in range(0, ok.sum(), 512)])
    z = data["z"][ok]
    phot = photometry(data["table"].filter(pa.array(ok)))
    # (features, principal components to keep, fitted in each training fold; 0 = none)
    spectral = {"spectrum": (zs, 0), "spectrum_raw_pca32": (data["flux"][ok], 32),
                "spectrum_pca32": (spec["spectrum"][ok][:, 0], 32),
                "spectrum_probe_pca": (rebin_spectra(data["flux"][ok], data["ivar"][ok],
                                                     SPECTRUM_BIN), PCA_COMPONENTS)}
    knn = {name: knn_redshift(x, z, pca=pca) for name, (x, pca) in
           {**spectral, "image": (zi, 0), "photometry": (phot, 0)}.items()}
    by_size = by_reference_size(spectral, z)
    by_size[str(len(z))] = {name: {"r2": knn[name]["r2"], "sigma_nmad": knn[name]["sigma_nmad"]}
                            for name in spectral}
    results = {"catalog": args.catalog, "model": str(files["image"].parent), "rows": int(ok.sum()),
               "model_name": encoders["image"].info.name,
               "redshift_knn": knn,
               "reference_size": by_size,
               "retrieval": {"image_to_spectrum": retrieval(zi, zs),
                             "spectrum_to_image": retrieval(zs, zi)},
               "seconds": round(time.time() - t0, 1)}
    text = json.dumps(portable(results), indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
