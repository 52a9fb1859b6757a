"""What the encoders know, measured on a held-out simulated survey.

    python bench/model_quality.py --catalog HELDOUT_CAT --survey SURVEY_DIR \
        --split validation|test [--model ONNXDIR] [--json OUT.json]

HELDOUT_CAT is a cross-matched catalog of a survey the model never saw (another seed,
SURVEY_DIR). Two such surveys keep the scores honest: model variants are compared on the
``validation`` one, and the released model is scored once on the ``test`` one, which nothing
was chosen on (the model card quotes the test scores). Every score is computed by the
functions ``astroembed probe`` uses (:mod:`astroembed.probes.metrics`). The
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
from astroembed.probes.metrics import fold_metrics, summarise
from astroembed.similarity import normalise, partner_ranks, retrieval_rates
from astroembed.simulation import read_simulation
from astroembed.stamps import utc_now

#: validation: the survey model variants are compared on; test: scored once per release.
SPLITS = ("validation", "test")


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
    """5-fold CV k-NN scored as ``astroembed probe`` scores it (the same functions): per fold
    R^2, sigma_NMAD, outlier fraction and bias, reported as the mean over folds and its
    fold-to-fold spread (``_std``). ``pca`` > 0: the features are first reduced to that many
    principal components, fitted on each training fold, so the held-out fold stays unseen."""
    per_fold = []
    for train, test in KFold(5, shuffle=True, random_state=seed).split(x):
        steps = [PCA(pca, random_state=0)] if pca else []
        model = make_pipeline(*steps, StandardScaler(), KNeighborsRegressor(k, weights="distance"))
        model.fit(x[train], z[train])
        per_fold.append(fold_metrics(z[test], model.predict(x[test]), redshift=True))
    return {key: value for key, value in summarise(per_fold).items() if value is not None}


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
    """Top-1, top-10, top-1% rates and ranks of finding ``b[i]`` for query ``a[i]`` by cosine
    similarity (as ``astroembed search --retrieval`` reports them)."""
    return retrieval_rates(partner_ranks(a, normalise(b)), len(b))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--survey", required=True,
                        help="the simulated survey the catalog was matched from (its seed is "
                             "recorded)")
    parser.add_argument("--split", required=True, choices=SPLITS,
                        help="validation: the survey model variants are compared on; test: "
                             "scored once per released model")
    parser.add_argument("--model", default=None, help="ONNX model directory (default model)")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args()
    simulation = read_simulation(args.survey)
    if simulation is None:
        parser.error(f"--survey {args.survey}: no simulation.json written by astroembed "
                     "simulate there")
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
    results = {"date": utc_now(), "split": args.split, "survey_seed": simulation["seed"],
               "survey_galaxies": simulation.get("n_galaxies"),
               "catalog": args.catalog, "model": str(files["image"].parent), "rows": int(ok.sum()),
               "model_name": encoders["image"].info.name,
               "model_version": encoders["image"].info.version,
               "redshift_knn": knn,
               "reference_size": by_size,
               "retrieval": {"image_to_spectrum": retrieval(zi, zs),
                             "spectrum_to_image": retrieval(zs, zi)},
               "seconds": round(time.time() - t0, 1)}
    text = json.dumps(portable(results), indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
        print(summary(results))
    else:
        print(text)
    return 0


def summary(results: dict) -> str:
    """The scores a release is judged by, one block per split."""
    knn, ret = results["redshift_knn"], results["retrieval"]
    lines = [f"{results['split']} survey (seed {results['survey_seed']}, {results['rows']:,} "
             f"pairs), model {results['model_name']} {results['model_version']}:"]
    for name in ("spectrum", "image", "spectrum_probe_pca", "photometry"):
        m = knn[name]
        lines.append(f"  k-NN redshift from {name:<18} R2 {m['r2']:.4f} +/- {m['r2_std']:.4f}  "
                     f"sigma_NMAD {m['sigma_nmad']:.4f}  outliers {m['outlier_fraction']:.4f}")
    lines.append(f"  retrieval top-1%: image->spectrum {ret['image_to_spectrum']['top1pct']:.3f}, "
                 f"spectrum->image {ret['spectrum_to_image']['top1pct']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
