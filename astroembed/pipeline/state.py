"""The run's record in the catalog (``CAT/astroembed_state.json``) and how the input files
compare with it.

The record holds each input file's size, mtime, SHA-256 and the tiles it reached, the tile
layout and the cross-match settings' fingerprint. A file is changed when its size or mtime
differ *and* its checksum does (a touched but identical file is not). A directory of brick
coadds is one input whose checksum is taken over its files' names, sizes and mtimes, not their
bytes: a survey's coadd tree is tens of terabytes, too much to read on every run. A brick file
rewritten with the same bytes therefore counts as a change (the cross-match is redone; nothing
is lost).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from astroembed.config import RunConfig

STATE_FILE = "astroembed_state.json"
STATE_VERSION = 1
HASH_CHUNK = 8 * 2**20


def read_state(catalog: str | os.PathLike) -> dict | None:
    """The catalog's run state, or None when it has none (or it is unreadable)."""
    try:
        state = json.loads((Path(catalog) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("version") == STATE_VERSION else None


def write_state(catalog: Path, state: dict) -> None:
    """Replace the state file atomically."""
    from astroembed.catalog.atomic import atomic_path

    with atomic_path(catalog / STATE_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")


def sha256(path: str) -> str:
    """A file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _directory_print(path: str) -> dict:
    """A brick directory's record, from one pass over its coadd files: their total size,
    latest mtime and a SHA-256 over their names, sizes and mtimes (see above)."""
    from astroembed.readers.bricks import brick_files

    digest, size, mtime = hashlib.sha256(), 0, 0.0
    for f in brick_files(path):
        st = f.stat()
        digest.update(f"{f.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n"
                      .encode())
        size, mtime = size + st.st_size, max(mtime, st.st_mtime)
    return {"size": size, "mtime": mtime, "sha256": digest.hexdigest()}


def crossmatch_fingerprint(cfg: RunConfig) -> str:
    """What makes two cross-matches comparable: every setting that changes rows or columns."""
    data = dataclasses.asdict(cfg.crossmatch)
    for key in ("images", "spectra", "out", "overwrite", "scheduler", "workers", "processes"):
        data.pop(key)
    data["suffixes"] = list(data["suffixes"])
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class InputDiff:
    """How the input files compare with the last run's."""

    fingerprints: dict[str, dict]      # every current file: size, mtime, sha256
    new: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def any(self) -> bool:
        return bool(self.new or self.changed or self.removed)


def diff_inputs(paths: list[str], known: dict[str, dict]) -> InputDiff:
    """Compare files with the last run's record (size and mtime first, checksum to confirm)."""
    prints, new, changed = {}, [], []
    for path in paths:
        old = known.get(path)
        if os.path.isdir(path):  # its listing is its checksum: always taken, and cheap
            prints[path] = _directory_print(path)
        else:
            st = os.stat(path)
            if old and old["size"] == st.st_size and old["mtime"] == st.st_mtime:
                prints[path] = dict(old)
                continue
            prints[path] = {"size": st.st_size, "mtime": st.st_mtime, "sha256": sha256(path)}
        if old is None:
            new.append(path)
        elif old.get("sha256") != prints[path]["sha256"]:
            changed.append(path)
    removed = sorted(set(known) - set(paths))
    return InputDiff(prints, new, changed, removed)
