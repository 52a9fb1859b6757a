"""``astroembed run`` under faults: a Dask worker process killed mid-run, a read-only
output directory, a full output device. Nothing may be lost and nothing duplicated.

Oracle: the same pipeline run without the fault, in this process and without Dask (the
sequential executor), compared row by row by TARGETID. The faults are real: SIGKILL to a
worker process found among the run's descendants; read-only bind mounts and a small tmpfs in
a private mount namespace (``unshare -m``; we run as root, so chmod would not stop a write).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import coadds

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "astroembed.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
STATE_FILE = "astroembed_state.json"


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=timeout)


def _can_unshare_mounts() -> str | None:
    """None when ``unshare -m`` with bind, read-only and tmpfs mounts works here; else why not."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux and unshare(1)"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" '
         '&& mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" && ! touch "$d/x" '
         '2>/dev/null; r=$?; umount "$d" 2>/dev/null; umount "$d" 2>/dev/null; rmdir "$d"; '
         'exit $r'], capture_output=True, text=True)
    if probe.returncode != 0:
        return (f"`unshare -m` with mounts is not permitted here (needs root or CAP_SYS_ADMIN): "
                f"{(probe.stderr or probe.stdout).strip()[:200]}")
    return None


NO_MOUNTS = _can_unshare_mounts()
needs_mounts = pytest.mark.skipif(NO_MOUNTS is not None, reason=str(NO_MOUNTS))


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def survey(run_survey) -> Path:
    return run_survey


def setup_pipeline(where: Path, survey: Path, *, hold: bool = False, max_rows: int = 200,
                   catalog: str = "out/cat", compute: str = "") -> Path:
    """A copy of the survey in ``where/in`` (with ``hold`` the first coadd set aside in
    ``where/held``) and ``where/pipe.toml``."""
    shutil.copytree(survey, where / "in")
    held = where / "held"
    held.mkdir()
    if hold:
        f = coadds(where / "in")[0]
        shutil.move(f, held / f.name)
        (held / f.name).with_suffix(".where").write_text(str(f))
    config = where / "pipe.toml"
    config.write_text(f'images = "in/legacysurvey"\nspectra = "in/desi"\ncatalog = "{catalog}"\n'
                      f'[crossmatch]\nradius = 1.0\nmax_rows = {max_rows}\n{compute}')
    return config


def held_back(where: Path) -> list[tuple[Path, Path]]:
    """(where it is now, where it belongs) for each held-back input."""
    return [(m.with_suffix(".fits"), Path(m.read_text()))
            for m in sorted((where / "held").glob("*.where"))]


def restore_held(where: Path) -> None:
    for now, dest in held_back(where):
        shutil.move(now, dest)


def run_in_process(config: Path) -> None:
    """The pipeline in this process, tasks one after another (no Dask cluster at all)."""
    from astroembed import compute as pipeline
    from astroembed.pipeline.run import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "SMALL_INPUT_BYTES", float("inf"))
        report = run(config)
    assert report["outcome"] == "ok", report


def read_rows(catalog: Path) -> dict[int, dict]:
    table = pq.ParquetDataset(catalog / "main" / "dataset").read()
    rows: dict[int, dict] = {}
    cols = table.column_names
    for i, tid in enumerate(table.column("TARGETID").to_pylist()):
        assert tid not in rows, f"TARGETID {tid} twice in {catalog}"
        rows[tid] = {c: table.column(c)[i].as_py() for c in cols}
    return rows


def assert_same_rows(got: dict, want: dict) -> None:
    """Same TARGETIDs, same columns, same values; embeddings null in the same rows, close."""
    assert len(got) == len(want)
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    assert not missing and not extra, f"lost {sorted(missing)[:10]}, extra {sorted(extra)[:10]}"
    for tid, w in want.items():
        g = got[tid]
        assert g.keys() == w.keys(), (tid, g.keys() ^ w.keys())
        for c, wv in w.items():
            gv = g[c]
            if c.startswith("embedding_"):
                assert (gv is None) == (wv is None), (tid, c)
                if wv is not None:
                    np.testing.assert_allclose(gv, wv, atol=1e-5, err_msg=f"{tid} {c}")
            elif isinstance(wv, list):
                np.testing.assert_array_equal(np.asarray(gv, dtype=float),
                                              np.asarray(wv, dtype=float), err_msg=f"{tid} {c}")
            else:
                assert gv == wv or (gv != gv and wv != wv), (tid, c, gv, wv)


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def reference_catalog(survey, tmp_path_factory) -> Path:
    """The catalog from a first run without one coadd, then a run with it back."""
    where = tmp_path_factory.mktemp("ref-update")
    config = setup_pipeline(where, survey, hold=True)
    run_in_process(config)
    restore_held(where)
    run_in_process(config)
    return where / "out" / "cat"


@pytest.fixture(scope="module")
def reference_update(reference_catalog) -> dict[int, dict]:
    return read_rows(reference_catalog)


# ----------------------------------------------------------------------------- worker killed

def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            table[int(entry.name)] = (int(fields[1]), fields[0], cmdline)
    return table


def _workers(root: int) -> list[int]:
    """Live Dask worker processes (multiprocessing spawn children of a nanny) under ``root``."""
    table = _processes()
    descendants, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier} - descendants
        descendants |= frontier
    return sorted(pid for pid in descendants
                  if table[pid][1] != "Z" and "spawn_main" in table[pid][2])


def _tiles(root: Path) -> list[Path]:
    return list(root.rglob("Npix=*.parquet")) if root.exists() else []


def _newest_mtime(root: Path) -> int:
    stamps = [0]
    for p in _tiles(root):
        with contextlib.suppress(FileNotFoundError):
            stamps.append(p.stat().st_mtime_ns)
    return max(stamps)


@pytest.mark.slow
def test_a_killed_dask_worker_is_replaced_and_the_catalog_equals_an_uninterrupted_run(
        tmp_path, survey):
    """SIGKILL one worker process while the cross-match writes tiles, and one of the embed
    stage's workers while it embeds tiles; the run recovers (nannies restart the workers, the
    scheduler reruns their tasks) and the catalog equals a sequential run's."""
    if not Path("/proc/self/stat").exists():
        pytest.skip("finds the worker processes through /proc (Linux)")
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    run_in_process(setup_pipeline(ref_dir, survey, max_rows=50))
    want = read_rows(ref_dir / "out" / "cat")
    assert len(_tiles(ref_dir / "out" / "cat")) > 60  # many tasks in each stage

    config = setup_pipeline(tmp_path, survey, max_rows=50,
                            compute="[compute]\nworkers = 2\nprocesses = true\n")
    out, catalog = tmp_path / "out", tmp_path / "out" / "cat"
    logs = tmp_path / "stdout.txt", tmp_path / "stderr.txt"  # files: a pipe could fill up
    with open(logs[0], "w") as so, open(logs[1], "w") as se:
        proc = subprocess.Popen([*EXE, "run", str(config)], env=ENV, stdout=so, stderr=se)
    killed: list[tuple[str, int]] = []
    try:
        seen: set[int] = set()
        stage, baseline = "crossmatch", 0
        deadline = time.time() + 240
        while proc.poll() is None and len(killed) < 2 and time.time() < deadline:
            live = _workers(proc.pid)
            if stage == "crossmatch":
                seen |= set(live)
                if live and _tiles(out):  # the match stage is writing tiles
                    os.kill(live[0], signal.SIGKILL)
                    killed.append(("crossmatch", live[0]))
                    stage = "between"
            elif stage == "between":
                if seen & set(live):
                    seen |= set(live)  # the cross-match cluster (and the nanny's replacement
                    # for the killed worker) is still up
                elif live:  # every worker is new: the embed stage's cluster
                    stage, baseline = "embed", _newest_mtime(catalog)
            elif stage == "embed" and live and _newest_mtime(catalog) > baseline:
                os.kill(live[0], signal.SIGKILL)  # tiles are being rewritten with embeddings
                killed.append(("embed", live[0]))
            time.sleep(0.05)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = (p.read_text() for p in logs)
    assert [s for s, _ in killed] == ["crossmatch", "embed"], \
        f"the run ended before both kills ({killed}); stderr:\n{stderr[-3000:]}"
    assert proc.returncode == 0, stderr[-5000:]
    assert f"{catalog}: ok" in stdout
    leftovers = [p.name for p in out.iterdir() if p.name not in ("cat", ".cat.astroembed.lock")]
    assert not leftovers, leftovers

    assert_same_rows(read_rows(catalog), want)
    assert "complete" in cli("info", catalog).stdout.splitlines()[0]
    again = cli("-q", "run", config, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcome"] == "nothing to do"


# ----------------------------------------------------------------------------- read-only output

def in_namespace_ro(ro_dir: Path, *command) -> subprocess.CompletedProcess:
    """``command`` in a private mount namespace where ``ro_dir`` is a read-only bind mount."""
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(ro_dir),
                           *map(str, command)], capture_output=True, text=True, env=ENV,
                          timeout=300)


@needs_mounts
@pytest.mark.parametrize("readonly", ["catalog parent", "catalog"])
def test_a_read_only_output_fails_clearly_and_keeps_the_previous_catalog(
        tmp_path, survey, reference_update, readonly):
    config = setup_pipeline(tmp_path, survey, hold=True)
    first = cli("-q", "run", config)
    assert first.returncode == 0, first.stderr
    out, catalog = tmp_path / "out", tmp_path / "out" / "cat"
    new_input = [str(dest.resolve()) for _, dest in held_back(tmp_path)]
    restore_held(tmp_path)
    before = checksums(out)
    ro_dir = out if readonly == "catalog parent" else catalog

    failed = in_namespace_ro(ro_dir, *EXE, "run", config)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    errors = error_lines(failed.stderr)
    assert len(errors) == 1, failed.stderr
    assert str(ro_dir) in errors[0], errors[0]
    assert any(s in errors[0].lower() for s in ("read-only", "not writable")), errors[0]
    assert checksums(out) == before  # nothing written anywhere under the output directory

    # Writable again: the held-back input goes in, and nothing is lost or duplicated.
    again = cli("-q", "run", config, "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["stages"]["crossmatch"]["mode"] == "update"
    assert report["inputs"]["new"] == new_input
    assert_same_rows(read_rows(catalog), reference_update)


# ----------------------------------------------------------------------------- full device

# Runs inside one `unshare -m`: the tmpfs exists only in that mount namespace, so everything
# that touches it happens here; the results come back as one JSON document on stdout.
FULL_DEVICE_DRIVER = textwrap.dedent("""
    import hashlib, json, os, shutil, subprocess, sys
    from pathlib import Path

    spec = json.loads(Path(sys.argv[1]).read_text())
    mnt, cat = Path(spec["mnt"]), Path(spec["catalog"])
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size']}", "tmpfs", str(mnt)],
                   check=True)

    def cli(*extra):
        r = subprocess.run([*spec["cli"], "run", spec["config"], *extra], capture_output=True,
                           text=True)
        return {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}

    def sums():
        return {str(p.relative_to(cat)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(cat.rglob("*")) if p.is_file()}

    def state():
        try:
            return json.loads((cat / "astroembed_state.json").read_text())
        except (OSError, ValueError) as err:
            return {"unreadable": str(err)}

    def free():
        st = os.statvfs(mnt)
        return st.f_bavail * st.f_frsize

    result = {"first": cli()}
    if result["first"]["rc"] == 0:
        result["used_by_first_run"] = spec["size"] - free()
        for now, dest in spec["held"]:
            shutil.move(now, dest)
        result["before"], result["state_before"] = sums(), state()
        fd = os.open(mnt / "filler", os.O_CREAT | os.O_WRONLY, 0o644)
        os.posix_fallocate(fd, 0, free() - spec["slack"])
        os.close(fd)
        result["free_when_full"] = free()
        result["full"] = cli()
        result["after"], result["state_after"] = sums(), state()
        result["out_after"] = sorted(os.listdir(mnt / "out"))
        os.unlink(mnt / "filler")
        result["recovered"] = cli("--json")
        shutil.copytree(cat, spec["copy_to"])
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def full_device(survey, reference_catalog, tmp_path_factory) -> dict:
    """A first run into a small tmpfs, then a new input and a run with ~100 kB left on it,
    then (space freed) a run again; what each did, and the catalog's checksums around the
    failed run."""
    if NO_MOUNTS is not None:
        pytest.skip(NO_MOUNTS)
    where = tmp_path_factory.mktemp("full-device")
    mnt = where / "mnt"
    mnt.mkdir()
    config = setup_pipeline(where, survey, hold=True, catalog=f"{mnt}/out/cat")
    catalog_bytes = sum(p.stat().st_size for p in reference_catalog.rglob("*") if p.is_file())
    size = (4 * catalog_bytes // 2**20 + 16) * 2**20  # crossmatch staging + catalog + rewrites
    spec = {"mnt": str(mnt), "catalog": str(mnt / "out" / "cat"), "size": size,
            "slack": 100_000, "config": str(config), "cli": EXE,
            "held": [[str(now), str(dest)] for now, dest in held_back(where)],
            "copy_to": str(where / "final-cat")}
    (where / "spec.json").write_text(json.dumps(spec))
    (where / "driver.py").write_text(FULL_DEVICE_DRIVER)
    done = subprocess.run(["unshare", "-m", sys.executable, str(where / "driver.py"),
                           str(where / "spec.json")], capture_output=True, text=True, env=ENV,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    result = json.loads(done.stdout)
    assert result["first"]["rc"] == 0, \
        f"the first run did not fit a {size} byte tmpfs: {result['first']['stderr'][-3000:]}"
    result.update(mnt=mnt, final=where / "final-cat", held=[d for _, d in spec["held"]])
    return result


def _without_run_record(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in ("last_run", "pipeline")}


@needs_mounts
@pytest.mark.slow
def test_a_full_output_device_fails_and_keeps_the_previous_catalog_and_a_later_run_catches_up(
        full_device, reference_update):
    assert full_device["free_when_full"] <= 200_000
    full = full_device["full"]
    assert full["rc"] == 1, full["stderr"][-5000:]
    # Every file of the previous catalog intact; the state file may only record the failed run
    # (its record of the inputs read must not change, or the new input would never be read).
    state = STATE_FILE
    assert {k: v for k, v in full_device["after"].items() if k != state} == \
        {k: v for k, v in full_device["before"].items() if k != state}
    assert _without_run_record(full_device["state_after"]) == \
        _without_run_record(full_device["state_before"])
    assert full_device["out_after"] == [".cat.astroembed.lock", "cat"]  # no staging left

    recovered = full_device["recovered"]
    assert recovered["rc"] == 0, recovered["stderr"][-5000:]
    report = json.loads(recovered["stdout"])
    assert report["stages"]["crossmatch"]["mode"] == "update"
    assert report["inputs"]["new"] == [str(Path(p).resolve()) for p in full_device["held"]]
    assert_same_rows(read_rows(full_device["final"]), reference_update)


@needs_mounts
@pytest.mark.slow
def test_a_full_output_device_is_reported_in_one_clear_error_line(full_device):
    stderr = full_device["full"]["stderr"]
    assert "Traceback (most recent call last)" not in stderr, stderr[-5000:]
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr[-5000:]
    assert "no space left" in errors[0].lower(), errors[0]
    assert str(full_device["mnt"]) in errors[0], errors[0]  # names where it could not write
