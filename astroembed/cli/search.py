"""``astroembed search``: nearest neighbours by embedding, or the retrieval report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from astroembed.cli.app import app, user_errors
from astroembed.cli.options import IdColumn, ModelName, json_flag
from astroembed.cli.render import number, print_json, quiet, stderr

AsJson = json_flag("Print the result as JSON on stdout.")


@app.command()
def search(
    catalog: Annotated[Path, typer.Option("--catalog", "-c", help="Catalog with embedding columns.")],
    like: Annotated[Optional[str], typer.Option("--like", help="ID of the query object (the catalog's ID column; `astroembed head --catalog CAT` shows some).")] = None,
    from_modality: Annotated[str, typer.Option("--from", help="Query embedding: image | spectrum.")] = "image",
    to_modality: Annotated[Optional[str], typer.Option("--to", help="Searched embedding: image | spectrum (default: as --from).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours to show.")] = 10,
    index: Annotated[str, typer.Option(help="exact | faiss | auto (faiss above 1e6 rows; the index is stored in CAT/astroembed_index/).")] = "auto",
    name: ModelName = None,
    id_column: IdColumn = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG of the query and its neighbours (cutouts, spectra).")] = None,
    evaluate: Annotated[bool, typer.Option("--evaluate", help="Retrieval report instead: top-1/10/1% accuracy of finding each object's partner across modalities.")] = False,
    queries: Annotated[int, typer.Option(help="--evaluate: objects queried per direction (a seeded sample; all are searched).")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the --evaluate sample and the faiss index.")] = 0,
    as_json: AsJson = False,
) -> None:
    """Nearest neighbours by cosine similarity of embeddings, in or across modalities.

    --from image --to spectrum finds the spectra most like an object's image (its own
    spectrum is flagged as the partner). --evaluate reports how often each object's own
    partner is found across modalities (top-1, top-10, top-1%): a model-quality metric.

    Example:  astroembed search --catalog demo-output/matched --like 39627798406496259 --from image --to spectrum
    """
    import astroembed

    with user_errors():
        report = astroembed.search(
            catalog, like=like, from_modality=from_modality, to_modality=to_modality, k=k,
            index=index, name=name, id_column=id_column, plot=str(plot) if plot else None,
            evaluate=evaluate, queries=queries, seed=seed)
        if as_json:
            print_json(report)
        elif evaluate:
            render_retrieval(report)
        else:
            render_neighbours(report)


def render_neighbours(report: dict) -> None:
    """The neighbours as a table; the partner starred."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    q = report["query"]
    table = Table(title=f"{report['columns']['from']} of {report['id_column']} {q['id']}"
                        + (f" (z {q['Z']:.4f})" if q.get("Z") is not None else "")
                        + f" -> {report['columns']['to']}: {report['index']} cosine search "
                        f"over {report['n_searched']} rows", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ("rank", report["id_column"], "similarity", "Z", "partner"):
        table.add_column(c, justify="right" if c != "partner" else "center")
    for n in report["neighbours"]:
        table.add_row(str(n["rank"]), str(n["id"]), f"{n['similarity']:.4f}",
                      number(n.get("Z")), "*" if n["partner"] else "")
    Console(highlight=False).print(table)
    if report.get("plot") and not quiet():
        stderr().print(f"wrote {report['plot']}", highlight=False)


def render_retrieval(report: dict) -> None:
    """Top-1/10/1% retrieval of each object's partner per direction, against chance."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"retrieval of each object's partner: {report['n_objects']} objects "
                        f"with both embeddings", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for c in ("from", "to", "queries", "top-1", "top-10", f"top-1% (k={report['top1pct_k']})",
              "median rank"):
        table.add_column(c, justify="right" if c not in ("from", "to") else "left")
    for d in report["directions"]:
        table.add_row(d["from"], d["to"], str(d["n_queries"]), f"{d['top1']:.3f}",
                      f"{d['top10']:.3f}", f"{d['top1pct']:.3f}", f"{d['median_rank']:.0f}")
    ch = report["chance"]
    table.add_row("chance", "", "", f"{ch['top1']:.3g}", f"{ch['top10']:.3g}",
                  f"{ch['top1pct']:.3g}", "")
    Console(highlight=False).print(table)
