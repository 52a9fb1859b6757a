"""pipelines/slurm-embed.sh, run as SLURM would run each array task, embeds every tile of a
catalog (checked in the tile files with pyarrow); a task id past the last tile fails with one
line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "pipelines" / "slurm-embed.sh"


def _task(task_id: int, catalog: Path, options: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("astroembed")
    if not exe.exists():
        pytest.skip("console script not installed next to this interpreter")
    env = dict(os.environ, CATALOG=str(catalog), SLURM_ARRAY_TASK_ID=str(task_id),
               SLURM_CPUS_PER_TASK="1", ASTROEMBED=str(exe), EMBED_OPTIONS=options,
               PYTHONPATH=str(ROOT))
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # a process per task
def test_array_tasks_embed_every_tile(small_survey, tiny_model, tmp_path):
    import astroembed

    catalog = tmp_path / "matched"  # a few tiles: one process per tile
    astroembed.crossmatch(small_survey / "legacysurvey", small_survey / "desi", catalog,
                          max_rows=400)
    tiles = sorted((catalog / "main" / "dataset").rglob("Npix=*.parquet"))
    assert len(tiles) > 1
    for task_id in range(len(tiles)):
        done = _task(task_id, catalog, f"--model {tiny_model} --modality image")
        assert done.returncode == 0, done.stderr
    for tile in tiles:
        column = pq.read_table(tile).column("embedding_image")
        assert column.null_count < len(column), tile
    past = _task(len(tiles), catalog, "")
    assert past.returncode == 2
    assert past.stderr == (f"error: array task {len(tiles)}: {catalog} has {len(tiles)} tiles "
                           "(0-based task ids)\n")
