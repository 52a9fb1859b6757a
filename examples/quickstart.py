"""Quickstart: simulate a mini-survey, read it back and cross-match it, through the public API.

    .venv/bin/python examples/quickstart.py [OUT]

The same readers open real DESI and Legacy Survey files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import astroembed
from astroembed.io import read_redshifts, read_spectra, wavelength_grid


def main(out: Path) -> None:
    summary = astroembed.simulate_survey(out, n_galaxies=300, seed=1, cutout_size=32, overwrite=True)
    print(f"simulated {summary['n_galaxies']} galaxies, {summary['n_fibres']} DESI fibres in {out}")

    report = astroembed.describe_inputs([out])
    for kind, totals in report["totals"].items():
        print(f"  {kind:16s} {totals['files']:3d} files {totals['rows']:6d} rows")

    coadd = sorted(out.rglob("coadd-main-*.fits"))[0]
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
    z = read_redshifts(sorted(out.rglob("zpix-main-*.fits"))[0])
    print(f"redshift catalog: {z.num_rows} primary rows, median Z {np.median(z['Z']):.3f}")

    catalog = out.parent / (out.name + "-matched")
    summary = astroembed.crossmatch_surveys(out / "legacysurvey", out / "desi", catalog,
                                            radius=1.0, mode="best", overwrite=True)
    print(f"cross-match: {summary['matched']} pairs; dropped {summary['dropped']}")
    info = astroembed.catalog_info(catalog)
    print(f"{catalog}: {info.total_rows} rows in {len(info.tiles)} tiles; columns include "
          f"{', '.join(n for n in ('image', 'flux', 'Z', '_dist_arcsec') if n in info.schema.names)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-output"))
