"""``astroembed probe``: how well the embeddings predict a catalog quantity."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import IdColumn, ModelName, json_flag, split_choices, split_levels
from astroembed.cli.progress import progress_bars
from astroembed.cli.render import number, quiet, stderr, show

AsJson = json_flag("Print the results as one JSON document on stdout.")


@app.command()
def probe(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog with embedding columns.")],
    target: Annotated[str, typer.Option(help="Numeric column to predict; 'redshift' means DESI's Z.")] = "redshift",
    embedding: Annotated[Optional[list[str]], typer.Option("--embedding", "-e", help="image | spectrum | both (comma list or repeated; default: every one present, and both).")] = None,
    method: Annotated[list[str], typer.Option("--method", "-m", help="knn | linear | mlp | all (comma list or repeated).")] = ["knn"],  # noqa: B006
    folds: Annotated[int, typer.Option(help="Cross-validation folds.")] = 5,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the k-NN probe (AstroCLIP: 64).")] = 64,
    metric: Annotated[str, typer.Option(help="k-NN distance on standardised embeddings: cosine | euclidean (the baselines always use euclidean).")] = "cosine",
    seed: Annotated[int, typer.Option(help="Seed of the folds and the MLP.")] = 0,
    index: Annotated[str, typer.Option(help="k-NN neighbours: exact | faiss | auto (faiss above 2e5 rows).")] = "auto",
    name: ModelName = None,
    id_column: IdColumn = None,
    baselines: Annotated[bool, typer.Option("--baselines/--no-baselines", help="Also probe photometry and a PCA of the raw spectra.")] = True,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Directory for predictions.parquet, PNG plots (two per result, and summary.png) and probe.json; a rerun removes the files its earlier report there listed and it no longer writes.")] = None,
    save: Annotated[Optional[Path], typer.Option("--save", help="Save the best embedding probe (refitted on all rows) to this directory.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --save directory.")] = False,
    level: Annotated[Optional[list[str]], typer.Option("--level", help="Central interval levels of the calibrated predictive distributions, in (0, 1) (comma list or repeated; default 0.68,0.95).")] = None,
    protocol: Annotated[str, typer.Option(help="kfold (--folds cross-validation) | astroclip (one seeded 80/20 split; k-NN k=64 euclidean; MLP [32] for images, [64, 64] for spectra, 10 epochs, Adam lr 1e-3).")] = "kfold",
    keep_stars: Annotated[bool, typer.Option("--keep-stars", help="Keep rows whose SPECTYPE is STAR in a redshift probe (left out by default: a star's redshift is ~0).")] = False,
    as_json: AsJson = False,
) -> None:
    """Cross-validated probes: how well the embeddings predict a catalog quantity.

    Distance-weighted k-NN (zero-shot), ridge (penalty by inner CV) and a small early-stopped
    MLP on standardised embeddings (fitted on the training folds only), against baselines run
    through the same k-NN: g, r, z magnitudes and colours, and a PCA of the raw spectra. Rows
    with ZWARN != 0 or SPECTYPE STAR (redshift), a NaN target or a null embedding are left
    out and counted.
    Metrics per fold (mean ± fold-to-fold std): R^2, and for redshift sigma_NMAD, outlier
    fraction (|dz|/(1+z) > 0.15) and bias. Every probe also gives each row a predictive
    distribution calibrated on held-out residuals (split-conformal): coverage and width of
    its --level intervals, CRPS and the PIT histogram, out of fold.

    Example:  astroembed probe --catalog demo-output/matched --target redshift --method all --out demo-output/probe
    """
    import astroembed
    from astroembed.config import INTERVAL_LEVELS, PROBE_METHODS

    with user_errors():
        with progress_bars(as_json) as progress:
            doc = astroembed.probe(
                catalog, target=target, progress=progress, embedding=split_choices(embedding),
                method=split_choices(method, PROBE_METHODS), folds=folds, k=k, metric=metric,
                seed=seed, index=index, name=name, id_column=id_column, baselines=baselines,
                out=str(out) if out else None, save=str(save) if save else None,
                overwrite=overwrite, protocol=protocol, keep_stars=keep_stars,
                levels=split_levels(level) or INTERVAL_LEVELS)
        show(doc, as_json, render)


def render(doc: dict) -> None:
    """The results as a table on stdout; what was left out, notes and outputs on stderr."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    split = (f"{doc['folds']}-fold CV, mean±std over folds"
             if doc.get("protocol", "kfold") == "kfold"
             else f"astroclip protocol: 80/20 split, {doc.get('n_test')} test rows")
    table = Table(title=f"probe of {doc['target']}: {doc['n_rows']} rows, {split}; k-NN "
                        f"k={doc['k']}, {doc['metric']} (baselines euclidean), {doc['index']}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    # Fits 80 columns with the coverage and CRPS columns: the fold spread is shown for R²
    # only (every metric's spread is in --json and the report).
    cols = ["features", "method", "R²"]
    cols += ["σ_NMAD", "outl.", "bias"] if doc["redshift"] else ["RMSE"]
    first = doc["results"][0] if doc["results"] else {}
    labels = [k[len("coverage_"):] for k in first
              if k.startswith("coverage_") and not k.endswith("_std")]
    cols += ([f"cov {'/'.join(labels)}", "CRPS"] if labels else [])
    for c in cols:
        table.add_column(c, justify="left" if c in ("features", "method") else "right", no_wrap=True)
    for r in doc["results"]:
        row = [r["features"], r["method"], number(r["r2"], std=r["r2_std"])]
        if doc["redshift"]:
            row += [number(r["sigma_nmad"]), number(r["outlier_fraction"], ".3f"),
                    number(r["bias"], "+.4f")]
        else:
            row.append(number(r["rmse"], ".4g", std=r["rmse_std"]))
        if labels:
            row += ["/".join(number(r.get(f"coverage_{lb}"), ".2f") for lb in labels),
                    number(r.get("crps"), ".4f")]
        table.add_row(*row)
    console.print(table)
    sys.stdout.flush()  # the table before the notes below on a shared terminal
    if quiet():
        return
    ex = ", ".join(f"{k} {v}" for k, v in doc["excluded"].items() if v) or "none"
    err = stderr()
    err.print(f"excluded rows: {ex}; columns: "
              + ", ".join(f"{m}={c}" for m, c in doc["columns"].items()), highlight=False)
    for note in doc["notes"]:
        err.print(f"note: {note}", highlight=False)
    if doc["outputs"]:
        outputs = doc["outputs"]
        err.print(f"wrote {outputs['predictions']}, {len(outputs['plots'])} plots and "
                  f"{outputs.get('summary_plot', 'no summary plot')}", highlight=False)
    if doc["saved"]:
        s = doc["saved"]
        err.print(f"saved the {s['features']} {s['method']} probe (R^2 {s['r2']:.4f}) to {s['path']}",
                  highlight=False)
