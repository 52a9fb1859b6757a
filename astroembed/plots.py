"""PNG plots for ``probe`` and ``search``.

matplotlib is imported here only, through its object API with the Agg canvas (no pyplot, no
global backend switch), so plotting works on a headless cron machine and never touches an
interactive session's state.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astroembed.catalog.atomic import atomic_path

#: Above this many points the probe plots show a density (hexbin, log colour scale): a
#: scatter of thousands of points is a blot that hides where most of them lie.
SCATTER_MAX = 2_000
OUTLIER_DZ = 0.15


def _figure(width: float, height: float):
    """A Figure with an Agg canvas attached (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, file: str | os.PathLike) -> Path:
    """Write the PNG atomically."""
    file = Path(file)
    with atomic_path(file) as tmp:
        fig.savefig(tmp, format="png")
    return file


def _points(ax, x: np.ndarray, y: np.ndarray, label: str = "rows"):
    """Many points as a hexbin density with a log colour scale (returned, for a colour bar);
    up to :data:`SCATTER_MAX` as translucent dots, so overlaps still show."""
    if len(x) > SCATTER_MAX:
        return ax.hexbin(x, y, gridsize=80, bins="log", mincnt=1, cmap="viridis")
    ax.scatter(x, y, s=8, alpha=0.5, lw=0, rasterized=True, label=label)
    return None


def probe_figure(y_true: np.ndarray, y_pred: np.ndarray, *, title: str = "",
                 redshift: bool = False, metrics: dict | None = None):
    """The figure of :func:`probe_plot` (a matplotlib Figure, not yet written)."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    fig = _figure(10, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    density = _points(ax1, t, p)
    if density is not None:
        fig.colorbar(density, ax=ax1, label="rows per cell", pad=0.01)
    lo, hi = (float(min(t.min(), p.min())), float(max(t.max(), p.max()))) if t.size else (0.0, 1.0)
    pad = 0.03 * (hi - lo or 1.0)
    lo, hi = (max(lo - pad, 0.0) if redshift and lo >= 0 else lo - pad), hi + pad
    line = np.linspace(lo, hi, 100)
    ax1.plot(line, line, "k-", lw=1, label="1:1")
    if redshift:
        ax1.plot(line, line + OUTLIER_DZ * (1 + line), "r--", lw=0.8,
                 label=f"|dz|/(1+z) = {OUTLIER_DZ}")
        ax1.plot(line, line - OUTLIER_DZ * (1 + line), "r--", lw=0.8)
    names = ("true z", "predicted z") if redshift else ("true", "predicted")
    ax1.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=names[0], ylabel=names[1], title=title)
    ax1.legend(loc="upper left", fontsize=8)
    if metrics:
        text = [f"N = {t.size}", f"R$^2$ = {metrics['r2']:.4f} ± {metrics['r2_std']:.4f}"]
        if redshift and metrics.get("sigma_nmad") is not None:
            text += [f"σ_NMAD = {metrics['sigma_nmad']:.4f}",
                     f"outliers = {metrics['outlier_fraction']:.3f}",
                     f"bias = {metrics['bias']:+.4f}"]
        ax1.text(0.97, 0.03, "\n".join(text), transform=ax1.transAxes, ha="right",
                 va="bottom", fontsize=8, bbox={"fc": "white", "alpha": 0.8, "lw": 0})
    resid = (p - t) / (1 + t) if redshift else p - t
    _points(ax2, t, resid)
    ax2.axhline(0, color="k", lw=1)
    if redshift:
        for sign in (1, -1):
            ax2.axhline(sign * OUTLIER_DZ, color="r", ls="--", lw=0.8)
    ax2.set(xlabel=names[0], ylabel="dz / (1 + z)" if redshift else "predicted - true",
            title="residuals")
    return fig


def probe_plot(y_true: np.ndarray, y_pred: np.ndarray, file: str | os.PathLike, *,
               title: str = "", redshift: bool = False, metrics: dict | None = None) -> Path:
    """Predicted vs true with the 1:1 line (and, for redshift, the |dz|/(1+z) = 0.15 outlier
    bounds), and the residuals vs true (dz/(1+z) for redshift), as a PNG."""
    return _save(probe_figure(y_true, y_pred, title=title, redshift=redshift,
                              metrics=metrics), file)


def summary_metrics(redshift: bool) -> list[tuple[str, str, bool]]:
    """What the summary figure compares: ``(key, label, higher_is_better)`` per panel, R^2
    always, sigma_NMAD and the outlier fraction for redshift, the RMSE otherwise."""
    if redshift:
        return [("r2", "R$^2$", True), ("sigma_nmad", "σ_NMAD", False),
                ("outlier_fraction", "outlier fraction", False)]
    return [("r2", "R$^2$", True), ("rmse", "RMSE", False)]


def summary_figure(results: list[dict], *, title: str = "", redshift: bool = False):
    """One bar per result (feature set x method) in each metric's panel, grouped by feature
    set and coloured by method, with the fold-to-fold spread as error bars: every probe of a
    run compared at a glance."""
    panels = summary_metrics(redshift)
    features = list(dict.fromkeys(r["features"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    width = 0.8 / max(len(methods), 1)
    fig = _figure(max(4.0, 1.1 * len(features) + 1.5) * len(panels) / 1.6, 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (key, label, higher) in zip(axes, panels):
        for j, method in enumerate(methods):
            rows = [r for r in results if r["method"] == method]
            x = [features.index(r["features"]) + (j - (len(methods) - 1) / 2) * width
                 for r in rows]
            values = [np.nan if r.get(key) is None else r[key] for r in rows]
            spread = [np.nan if r.get(f"{key}_std") is None else r[f"{key}_std"] for r in rows]
            ax.bar(x, values, width, yerr=spread, capsize=2, color=f"C{j}", label=method)
        ax.set_xticks(range(len(features)), features, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{label} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        ax.grid(axis="y", lw=0.4, alpha=0.5)
    axes[0].legend(fontsize=8, title="method", title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def summary_plot(results: list[dict], file: str | os.PathLike, *, title: str = "",
                 redshift: bool = False) -> Path:
    """:func:`summary_figure` as a PNG."""
    return _save(summary_figure(results, title=title, redshift=redshift), file)


def pit_plot(pit: np.ndarray, file: str | os.PathLike, *, title: str = "",
             metrics: dict | None = None, bins: int = 20) -> Path:
    """Histogram of the (randomized) PIT values as a density: flat at 1 for a calibrated
    predictive distribution; a U shape says too narrow, a hump too wide, a slope biased."""
    pit = np.asarray(pit, np.float64)
    pit = pit[np.isfinite(pit)]
    fig = _figure(5, 3.8)
    ax = fig.subplots()
    ax.hist(pit, bins=bins, range=(0.0, 1.0), density=True, color="tab:blue", alpha=0.8)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="calibrated")
    ax.set(xlim=(0, 1), xlabel="PIT", ylabel="density", title=title or "PIT")
    ax.legend(loc="upper right", fontsize=8)
    if metrics:
        text = [f"{k.replace('_', ' ')} = {v:.3f}" for k, v in metrics.items()
                if isinstance(v, float)]
        ax.text(0.03, 0.03, "\n".join(text), transform=ax.transAxes, ha="left", va="bottom",
                fontsize=8, bbox={"fc": "white", "alpha": 0.8, "lw": 0})
    return _save(fig, file)


def rgb_image(img: np.ndarray) -> np.ndarray:
    """A g, r, z cutout (3, H, W) in nanomaggies as an (H, W, 3) RGB image in [0, 1].

    The Legacy Surveys viewer's recipe (legacypipe ``sdss_rgb``): z, r, g -> R, G, B with
    per-band scales, then an asinh stretch of the mean intensity.
    """
    scales = (6.0, 3.4, 2.2)  # g, r, z
    bands = [np.nan_to_num(np.asarray(img[i], np.float64)) * s + 0.03
             for i, s in enumerate(scales)]
    mean = np.maximum((bands[0] + bands[1] + bands[2]) / 3.0, 1e-6)
    q = 20.0
    stretch = np.arcsinh(mean * q) / np.sqrt(q)
    rgb = np.stack([bands[2], bands[1], bands[0]], axis=-1) * (stretch / mean)[..., None]
    return np.clip(rgb, 0.0, 1.0)


#: DESI coadd flux density, the unit of the catalog's ``flux`` column.
FLUX_LABEL = "flux [10$^{-17}$ erg s$^{-1}$ cm$^{-2}$ Å$^{-1}$]"
WAVE_LABEL = "wavelength [Å]"
PARTNER_COLOUR = "tab:red"


def _row_label(i: int, item: dict) -> str:
    """``query ID ...`` or ``#rank ID ...`` with similarity, redshift and the partner flag."""
    label = f"{'query' if i == 0 else '#' + str(item.get('rank', i))} ID {item['id']}"
    if i and item.get("similarity") is not None:
        label += f"\nsim {item['similarity']:.3f}"
    if item.get("Z") is not None:
        label += f"  z {item['Z']:.3f}"
    if i and item.get("partner"):
        label += "\nquery's own partner"
    return label


def _mark_partner(ax) -> None:
    """A thick coloured frame: the result is the query object itself, seen in the other
    modality (what a good cross-modal model ranks first)."""
    for spine in ax.spines.values():
        spine.set_edgecolor(PARTNER_COLOUR)
        spine.set_linewidth(2.5)


def search_figure(rows: list[dict], images: dict[int, np.ndarray],
                  spectra: dict[int, np.ndarray], wave: np.ndarray | None = None,
                  title: str = ""):
    """The figure of :func:`search_plot` (a matplotlib Figure, not yet written): per row an
    image axes then a spectrum axes, whichever there are data for."""
    n = len(rows)
    widths = ([1] if images else []) + ([4] if spectra else []) or [1]
    fig = _figure(2.0 * sum(widths) + 0.6 if spectra else 2.5, 1.5 * n + 0.6)
    grid = fig.add_gridspec(n, len(widths), width_ratios=widths)
    for i, item in enumerate(rows):
        label = _row_label(i, item)
        partner = bool(i and item.get("partner"))
        colour = PARTNER_COLOUR if partner else "black"
        col = 0
        row = item["row"]
        if images or not spectra:
            ax = fig.add_subplot(grid[i, col])
            if row in images:
                ax.imshow(rgb_image(images[row]), origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", color=colour)
            if partner:
                _mark_partner(ax)
            col += 1
        if spectra:
            ax = fig.add_subplot(grid[i, col])
            if row in spectra:
                flux = np.asarray(spectra[row], np.float64)
                x = wave if wave is not None else np.arange(flux.size)
                smooth = np.convolve(np.nan_to_num(flux), np.ones(9) / 9, mode="same")
                ax.plot(x, smooth, lw=0.5, color="C0" if i else "k")
            ax.tick_params(labelsize=6)
            ax.set_ylabel(FLUX_LABEL, fontsize=5.5)
            if not images:
                ax.yaxis.set_label_position("right")
                ax.annotate(label, (-0.08, 0.5), xycoords="axes fraction", ha="right",
                            va="center", fontsize=7, color=colour)
            if partner:
                _mark_partner(ax)
            if i < n - 1:
                ax.set_xticklabels([])
            else:
                ax.set_xlabel(WAVE_LABEL if wave is not None else "pixel", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def search_plot(file: str | os.PathLike, rows: list[dict], images: dict[int, np.ndarray],
                spectra: dict[int, np.ndarray], wave: np.ndarray | None = None,
                title: str = "") -> Path:
    """The query (first entry of ``rows``) and its neighbours, one per line: the cutout as a
    colour image and the spectrum as a curve (wavelength in Å, flux in 1e-17 erg/s/cm²/Å),
    labelled with ID, similarity and redshift; the query's own partner (a cross-modal result
    that is the query object itself) framed and labelled in red.

    ``images`` and ``spectra`` map catalog row -> array; either may be empty (the catalog
    then lacks that column) and the plot shows what there is.
    """
    return _save(search_figure(rows, images, spectra, wave, title), file)
