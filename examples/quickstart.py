"""Quickstart: the whole astroembed chain through the public Python API.

    .venv/bin/python examples/quickstart.py [OUT]     # OUT defaults to ./quickstart-output

1. simulate a mini-survey in the real DESI and Legacy Survey file formats,
2. read one DESI coadd and the redshift catalog back with the readers,
3. cross-match images with spectra into a HATS catalog,
4. embed both modalities with the default model,
5. probe how well the embeddings predict redshift (k-NN, 5-fold cross-validation),
6. search: the spectra nearest to one galaxy's image.

The same calls work on real DESI and Legacy Survey files; `astroembed run pipelines/demo.toml`
runs steps 3-5 as an incremental pipeline.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import astroembed
from astroembed.readers import read_redshifts, read_spectra, wavelength_grid


def main(out: Path) -> None:
    start = time.perf_counter()
    survey, catalog = out / "survey", out / "matched"

    # 1. Simulate. The default model crops 32x32 pixels, so cutouts must be at least that.
    summary = astroembed.simulate(survey, n_galaxies=1500, seed=1, cutout_size=64,
                                         overwrite=True)
    print(f"simulated {summary['n_galaxies']} galaxies, {summary['n_fibres']} DESI fibres "
          f"in {survey}")
    report = astroembed.inspect([survey])
    for kind, totals in report["totals"].items():
        print(f"  {kind:16s} {totals['files']:3d} files {totals['rows']:6d} rows")

    # 2. Read a coadd and the redshift catalog with the same readers the pipeline uses.
    coadd = sorted(survey.rglob("coadd-main-*.fits"))[0]
    spectra = read_spectra(coadd)
    usable = spectra.filter(
        (np.asarray(spectra["TARGETID"]) > 0)
        & (np.asarray(spectra["OBJTYPE"].to_pylist()) == "TGT")
        & (np.asarray(spectra["COADD_FIBERSTATUS"]) == 0)
    )
    flux = np.asarray(usable["flux"][0].values)
    wave = wavelength_grid()
    print(f"{coadd.name}: {spectra.num_rows} fibres, {usable.num_rows} usable; first spectrum "
          f"{wave[0]:.0f}-{wave[-1]:.0f} A, median flux {np.median(flux):.3f} 1e-17 erg/s/cm2/A")
    z = read_redshifts(sorted(survey.rglob("zpix-main-*.fits"))[0])
    print(f"redshift catalog: {z.num_rows} primary rows, median Z {np.median(z['Z']):.3f}")

    # 3. Cross-match Legacy Survey objects with DESI spectra (1 arcsec, nearest spectrum).
    summary = astroembed.crossmatch(survey / "legacysurvey", survey / "desi", catalog,
                                            radius=1.0, mode="best", overwrite=True)
    info = astroembed.info(catalog)
    print(f"cross-match: {summary['matched']} pairs, dropped {summary['dropped']}; "
          f"{info['total_rows']} rows in {len(info['tiles'])} tiles")

    # 4. Embed images and spectra with the default model (no `model=`).
    summary = astroembed.embed(catalog)
    for column, c in summary["columns"].items():
        print(f"embed: {column} ({c['dim']}-d, {c['model_name']}): {c['embedded']} rows")
    providers = sorted({p for used in summary["providers"].values() for p in used})
    print(f"  {summary['rows_per_second']} rows/s with {', '.join(providers)}")

    # 5. Probe: how much redshift information do the embeddings carry? Photometry and
    # spectrum PCA are the baselines. dz = z_pred - z_true;
    # sigma_NMAD = 1.48 * median(|dz - median(dz)| / (1 + z_true)).
    doc = astroembed.probe(catalog, "redshift", method=("knn",), out=str(out / "probe"))
    print(f"probe of redshift on {doc['n_rows']} rows ({doc['folds']}-fold CV):")
    for r in doc["results"]:
        print(f"  {r['features']:14s} {r['method']:6s} R^2 {r['r2']:6.3f}   "
              f"sigma_NMAD {r['sigma_nmad']:.4f}")

    # 6. Search across modalities: the spectra whose embeddings are nearest to one galaxy's
    # image embedding. Its own spectrum (its `partner`) should rank near the top.
    tile = next((catalog / "main" / "dataset").rglob("Npix=*.parquet"))
    table = pq.read_table(tile, columns=["TARGETID", "embedding_image", "embedding_spectrum"])
    both = np.asarray(table["embedding_image"].is_valid()) & np.asarray(
        table["embedding_spectrum"].is_valid())
    like = table["TARGETID"][int(np.flatnonzero(both)[0])].as_py()
    found = astroembed.search(catalog, like, from_modality="image",
                                      to_modality="spectrum", k=5)

    def z_text(item: dict) -> str:
        return "-" if item.get("Z") is None else f"{item['Z']:.3f}"

    print(f"search: spectra nearest to the image of TARGETID {like} (Z {z_text(found['query'])})")
    for n in found["neighbours"]:
        mark = "  <- its own spectrum" if n["partner"] else ""
        print(f"  #{n['rank']} {n['id']}  cosine {n['similarity']:.3f}  Z {z_text(n)}{mark}")

    print(f"done in {time.perf_counter() - start:.0f} s; outputs in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-output"))
