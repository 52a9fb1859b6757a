"""Small catalogs with embedding columns for the probe and search tests.

The embeddings are built so the right answer is known: a chosen linear relation to the
target, or image and spectrum embeddings that are noisy copies of one latent vector per
object (so each object's partner is certain to be its nearest neighbour across modalities).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from astroembed.catalog.layout import tile_of
from astroembed.catalog.writer import CatalogWriter
from astroembed.matching.sky import healpix29

ORDER = 6  # ~0.9 deg tiles: a 2x2 deg patch spreads over several tiles


def vector_column(x: np.ndarray | None, valid: np.ndarray | None = None, dim: int | None = None) -> pa.Array:
    """``fixed_size_list<float32>[d]`` with nulls where ``valid`` is False."""
    x = np.asarray(x, np.float32)
    d = x.shape[1]
    arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), d)
    if valid is not None and not valid.all():
        arr = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float32()), d,
                                                mask=pa.array(~valid))
    return arr


def write_catalog(path: Path, columns: dict[str, np.ndarray | pa.Array], seed: int = 0,
                  field_meta: dict[str, dict[bytes, bytes]] | None = None,
                  ra_dec: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """A HATS catalog of the given columns (plus RA, DEC, _healpix_29) over several tiles."""
    n = len(next(iter(columns.values())))
    rng = np.random.default_rng(seed + 1000)
    if ra_dec is None:
        ra = rng.uniform(150.0, 152.0, n)
        dec = rng.uniform(0.0, 2.0, n)
    else:
        ra, dec = ra_dec
    h29 = healpix29(ra, dec)
    data = {"RA": ra, "DEC": dec, "_healpix_29": h29} | dict(columns)
    fields = []
    for name, value in data.items():
        t = value.type if isinstance(value, pa.Array) else pa.array(value).type
        fields.append(pa.field(name, t, metadata=(field_meta or {}).get(name)))
    table = pa.table({k: v for k, v in data.items()}, schema=pa.schema(fields))
    pix = tile_of(h29, ORDER)
    writer = CatalogWriter(path, ra_column="RA", dec_column="DEC")
    writer.begin()
    for p in np.unique(pix):
        writer.write_tile(ORDER, int(p), table.filter(pa.array(pix == p)))
    writer.finish({"command": "test"}, {"astroembed_id_column": "TARGETID"}, schema=table.schema)
    return path


def linear_catalog(path: Path, n: int = 600, dim: int = 16, seed: int = 0, noise: float = 0.01,
                   shuffle_target: bool = False, **extra) -> tuple[Path, np.ndarray, np.ndarray]:
    """Image and spectrum embeddings with ``Z = X_image @ w + noise`` (Z in ~0..0.6)."""
    rng = np.random.default_rng(seed)
    xi = rng.normal(size=(n, dim)).astype(np.float32)
    xs = rng.normal(size=(n, dim)).astype(np.float32)
    w = rng.normal(size=dim)
    raw = xi @ w
    z = 0.3 + 0.1 * raw / raw.std() + noise * rng.normal(size=n)
    if shuffle_target:
        z = rng.permutation(z)
    columns = {
        "TARGETID": np.arange(1000, 1000 + n, dtype=np.int64),
        "Z": z, "ZWARN": np.zeros(n, np.int64),
        "embedding_image": vector_column(xi), "embedding_spectrum": vector_column(xs),
    } | extra
    write_catalog(path, columns, seed=seed)
    return path, xi, z


def partner_catalog(path: Path, n: int = 300, dim: int = 32, seed: int = 0,
                    noise: float = 0.05, image_null: int | None = None) -> Path:
    """Image and spectrum embeddings = one random unit latent per object + small noise, so an
    object's own image/spectrum is by far its most similar across modalities."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, dim))
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)

    def noisy():
        x = latent + noise * rng.normal(size=latent.shape) / np.sqrt(dim)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    valid = np.ones(n, bool)
    if image_null is not None:
        valid[image_null] = False
    meta = {b"model_name": b"test", b"model_hash": b"sha256:abc", b"dim": str(dim).encode()}
    columns = {
        "TARGETID": np.arange(5000, 5000 + n, dtype=np.int64),
        "Z": rng.uniform(0.01, 0.6, n), "ZWARN": np.zeros(n, np.int64),
        "embedding_image": vector_column(noisy(), valid),
        "embedding_spectrum": vector_column(noisy()),
    }
    return write_catalog(path, columns, seed=seed,
                         field_meta={"embedding_image": meta, "embedding_spectrum": meta})


def baseline_catalog(path: Path, n: int = 400, seed: int = 0, dim: int = 8,
                     suffix: str = "_left") -> Path:
    """Redshift written into g-r / r-z colours (fluxes dimmed by MW_TRANSMISSION, so only
    corrected magnitudes see it cleanly) and into the position of a line in the spectra;
    the embeddings are pure noise. Flux columns carry ``suffix`` as crossmatch names them."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.5, n)
    r = rng.uniform(17.0, 19.5, n)
    g, zmag = r + 0.4 + 2.0 * z, r - 0.2 - 1.0 * z
    mw = rng.uniform(0.5, 1.0, (n, 3))
    flux = {b: 10 ** (-0.4 * (m - 22.5)) * mw[:, i]
            for i, (b, m) in enumerate(zip("GRZ", (g, r, zmag)))}
    wave = 3600.0 + 0.8 * np.arange(7781)
    line = 4000.0 * (1 + z)
    spectra = (1.0 + 5.0 * np.exp(-0.5 * ((wave[None, :] - line[:, None]) / 20.0) ** 2)
               + 0.05 * rng.normal(size=(n, wave.size))).astype(np.float32)
    noise = rng.normal(size=(n, dim)).astype(np.float32)
    columns = {
        "TARGETID": np.arange(n, dtype=np.int64) + 7, "Z": z, "ZWARN": np.zeros(n, np.int64),
        **{f"FLUX_{b}{suffix}": flux[b].astype(np.float32) for b in "GRZ"},
        **{f"MW_TRANSMISSION_{b}": mw[:, i].astype(np.float32) for i, b in enumerate("GRZ")},
        "flux": vector_column(spectra), "ivar": vector_column(np.ones_like(spectra)),
        "embedding_image": vector_column(noise),
    }
    return write_catalog(path, columns, seed=seed)


def heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``x`` (N, 2) in [0, 1]: ``x[:, 0]`` sets the mean of the target, ``x[:, 1]`` the
    width of its Gaussian noise (0.02 to 0.32), so an honest distribution must widen with it.
    Returns ``(x, y, sigma)``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 2))
    sigma = 0.02 + 0.3 * x[:, 1]
    y = 0.5 + 0.3 * np.sin(2 * np.pi * x[:, 0]) + sigma * rng.normal(size=n)
    return x.astype(np.float32), y, sigma
