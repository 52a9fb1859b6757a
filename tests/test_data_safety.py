"""Nothing lost, nothing hidden: writers replace only what astroembed made, take the catalog
lock, publish files under the umask, and say truly what an interrupted run kept.

Oracles are outside the code under test: file listings and checksums, ``os.stat`` modes,
exit codes, Parquet footers read with pyarrow, and the messages' own claims checked on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import astroembed
from astroembed.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-m", "astroembed.cli"]
runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def cli(*args, umask: int | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def start(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([*EXE, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` (hidden ones too) with its SHA-256."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def one_error(stderr: str) -> str:
    """The single ``error:`` line of a refusal (at most one hint line may follow)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def models(tiny_model) -> Path:
    return tiny_model


@pytest.fixture(scope="module")
def matched(tiled_catalog) -> Path:
    return tiled_catalog


@pytest.fixture(scope="module")
def embedded(matched, models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety-emb") / "cat"
    shutil.copytree(matched, out)
    astroembed.embed(out, model=str(models))
    return out


# ----------------------------------------------------------------------------- overwrite


def test_simulate_overwrite_never_deletes_a_users_directory(tmp_path):
    mine = tmp_path / "mydir"
    mine.mkdir()
    (mine / "thesis.txt").write_text("four years of work")
    result = invoke("simulate", mine, "-n", "50", "--overwrite")
    assert result.exit_code == 1
    assert "thesis.txt" in one_error(result.stderr)
    assert tree(mine) == {"thesis.txt": hashlib.sha256(b"four years of work").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydir"]


def test_simulate_replaces_its_own_survey_but_not_one_with_a_users_file(tmp_path):
    survey = tmp_path / "survey"
    assert invoke("-q", "simulate", survey, "-n", "50", "--seed", "1").exit_code == 0
    first = tree(survey)
    refused = invoke("simulate", survey, "-n", "50", "--seed", "2")
    assert refused.exit_code == 1 and "--overwrite" in one_error(refused.stderr)
    assert invoke("-q", "simulate", survey, "-n", "50", "--seed", "2", "--overwrite").exit_code == 0
    second = tree(survey)
    assert second != first and "simulation.json" in second
    (survey / "desi" / "notes.md").write_text("my notes")
    refused = invoke("simulate", survey, "-n", "50", "--seed", "3", "--overwrite")
    assert refused.exit_code == 1 and "desi/notes.md" in one_error(refused.stderr)
    assert tree(survey) == second | {"desi/notes.md": hashlib.sha256(b"my notes").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["survey"]  # no temporaries left


def test_crossmatch_overwrite_refuses_a_catalog_holding_a_users_file(small_survey, matched,
                                                                     tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(matched, cat)
    (cat / "README.txt").write_text("what this catalog is for")
    before = tree(cat)
    result = invoke("crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                    "--out", cat, "--overwrite")
    assert result.exit_code == 1 and "README.txt" in one_error(result.stderr)
    assert tree(cat) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]


def test_probe_save_and_out_keep_users_files(embedded, tmp_path):
    save = tmp_path / "notes"
    save.mkdir()
    (save / "thesis.txt").write_text("mine")
    result = invoke("probe", "-c", embedded, "--no-baselines", "--save", save, "--overwrite")
    assert result.exit_code == 1 and "thesis.txt" in one_error(result.stderr)
    assert tree(save) == {"thesis.txt": hashlib.sha256(b"mine").hexdigest()}

    # a directory astroembed made, but of another kind, is not replaced either
    result = invoke("probe", "-c", embedded, "--no-baselines", "--save", embedded, "--overwrite")
    assert result.exit_code == 1 and "catalog" in one_error(result.stderr)

    out = tmp_path / "report"
    out.mkdir()
    (out / "predictions.parquet").write_bytes(b"the user's own table")
    result = invoke("probe", "-c", embedded, "--no-baselines", "--out", out)
    assert result.exit_code == 1 and "predictions.parquet" in one_error(result.stderr)
    assert (out / "predictions.parquet").read_bytes() == b"the user's own table"

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "thesis.txt").write_text("mine")
    for _ in range(2):  # a second report replaces the first's files, and only those
        result = invoke("-q", "probe", "-c", embedded, "--no-baselines", "--out", shared)
        assert result.exit_code == 0, result.output
    assert (shared / "thesis.txt").read_text() == "mine"
    assert (shared / "probe.json").is_file() and (shared / "predictions.parquet").is_file()


def test_export_overwrite_refuses_a_directory_it_did_not_make(tmp_path):
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "model.pt").write_bytes(b"not read: the output is checked first")
    out = tmp_path / "onnx"
    out.mkdir()
    (out / "thesis.txt").write_text("mine")
    result = invoke("export", trained, "--out", out, "--overwrite")
    assert result.exit_code == 1 and "thesis.txt" in one_error(result.stderr)
    assert tree(out) == {"thesis.txt": hashlib.sha256(b"mine").hexdigest()}


def test_run_refuses_a_catalog_path_holding_a_users_files(small_survey, tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "thesis.txt").write_text("mine")
    config = tmp_path / "pipe.toml"
    config.write_text(f'images = "{small_survey / "legacysurvey"}"\n'
                      f'spectra = "{small_survey / "desi"}"\ncatalog = "cat"\n')
    result = cli("run", config)
    assert result.returncode == 1
    assert "thesis.txt" in result.stderr and "Traceback" not in result.stderr
    assert tree(tmp_path / "cat") == {"thesis.txt": hashlib.sha256(b"mine").hexdigest()}


def test_predict_overwrite_replaces_only_columns_a_probe_made(embedded, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(embedded, cat)
    probe = tmp_path / "probe"
    assert invoke("-q", "probe", "-c", cat, "--no-baselines", "--save", probe).exit_code == 0
    schema = pq.read_schema(next((cat / "main" / "dataset").rglob("Npix=*.parquet")))
    theirs = next(f.name for f in schema if f.name.endswith("_left")
                  and f.type in ("double", "float"))
    before = tree(cat)
    result = invoke("predict", "-c", cat, "--probe", probe, "--column", theirs, "--overwrite")
    assert result.exit_code == 1 and "no probe made" in one_error(result.stderr)
    assert tree(cat) == before
    assert invoke("-q", "predict", "-c", cat, "--probe", probe, "--column", "z_pred").exit_code == 0
    again = invoke("-q", "predict", "-c", cat, "--probe", probe, "--column", "z_pred",
                   "--overwrite")
    assert again.exit_code == 0, again.output


def test_a_png_output_refuses_a_directory_before_any_work(embedded, tmp_path):
    plot = tmp_path / "plots"
    plot.mkdir()
    like = pq.read_table(next((embedded / "main" / "dataset").rglob("Npix=*.parquet")),
                         columns=["TARGETID"]).column(0)[0].as_py()
    result = invoke("search", "-c", embedded, "--like", like, "--plot", plot)
    assert result.exit_code in (1, 2) and "directory" in one_error(result.stderr)
    assert list(plot.iterdir()) == []


# ----------------------------------------------------------------------------- the lock

HOLD = """
import sys, time
from astroembed.catalog.lock import CatalogLock
lock = CatalogLock(sys.argv[1], sys.argv[2])
with (lock.shared() if sys.argv[3] == "shared" else lock.exclusive()):
    print("held", flush=True)
    time.sleep(120)
"""


class Holder:
    """Another process holding the catalog lock (as an embed or a crossmatch would)."""

    def __init__(self, catalog: Path, command: str, mode: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(catalog), command, mode],
                                     stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout.readline().strip() == "held"

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


def test_writers_exit_3_and_change_nothing_while_another_holds_the_catalog(
        small_survey, embedded, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(embedded, cat)
    probe = tmp_path / "probe"
    assert invoke("-q", "probe", "-c", cat, "--no-baselines", "--save", probe).exit_code == 0
    config = tmp_path / "pipe.toml"
    config.write_text(f'images = "{small_survey / "legacysurvey"}"\n'
                      f'spectra = "{small_survey / "desi"}"\ncatalog = "cat"\n')
    before, siblings = tree(cat), sorted(p.name for p in tmp_path.iterdir())
    with Holder(cat, "embed", "shared"):  # an embed run at work
        for args in (["crossmatch", small_survey / "legacysurvey", small_survey / "desi",
                      "--out", cat, "--overwrite"],
                     ["predict", "-c", cat, "--probe", probe],
                     ["run", config]):
            result = cli(*args)
            assert result.returncode == 3, (args[0], result.stderr)
            assert "another astroembed process is working on it" in result.stderr
            assert "Traceback" not in result.stderr
            assert tree(cat) == before, args[0]
    with Holder(cat, "crossmatch", "exclusive"):
        result = cli("embed", "--catalog", cat, "--name", "again")
        assert result.returncode == 3 and "(astroembed crossmatch" in result.stderr
    assert tree(cat) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(siblings + [".cat.astroembed.lock"])


def test_two_embed_tile_jobs_run_side_by_side(matched, models, tmp_path):
    cat = tmp_path / "cat"
    shutil.copytree(matched, cat)
    tiles = cli("info", cat, "--tiles").stdout.split()
    assert len(tiles) >= 2
    jobs = [start("-q", "embed", "--catalog", cat, "--model", models, "--tile", t,
                  "--batch-size", "2") for t in tiles[:2]]
    codes = [(j.wait(timeout=300), j.stderr.read()) for j in jobs]
    assert [c for c, _ in codes] == [0, 0], codes
    for t in tiles[:2]:
        order, pixel = map(int, t.split("/"))
        file = cat / "main" / "dataset" / f"Norder={order}" / f"Dir={pixel // 10000 * 10000}" / f"Npix={pixel}.parquet"
        assert "embedding_image" in pq.read_schema(file).names


# ----------------------------------------------------------------------------- umask

def modes(root: Path) -> dict[str, int]:
    return {str(p): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o027])  # differs from 0o600, 0o644 and 0o664 modes alike
def test_outputs_honour_the_umask(umask, models, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o777 & ~umask)
    steps = [["simulate", work / "survey", "-n", "60"],
             ["crossmatch", work / "survey" / "legacysurvey", work / "survey" / "desi",
              "--out", work / "cat"],
             ["embed", "--catalog", work / "cat", "--model", models],
             ["probe", "-c", work / "cat", "--no-baselines", "--folds", "2", "--k", "3",
              "--out", work / "report", "--save", work / "probe"]]
    for args in steps:
        result = cli("-q", *args, umask=umask)
        assert result.returncode == 0, (args[0], result.stderr)
    found = modes(work)
    assert any(name.endswith(".cat.astroembed.lock") for name in found)
    for path, mode in found.items():
        want = (0o777 if Path(path).is_dir() else 0o666) & ~umask
        assert mode == want, f"{path}: {oct(mode)} with umask {oct(umask)}, expected {oct(want)}"


# ----------------------------------------------------------------------------- interruption

def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll ``condition`` until it holds (True) or the process ended first (False)."""
    end = time.time() + timeout
    while time.time() < end:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise TimeoutError("the condition never held")


def kept_paths(message: str) -> list[Path]:
    """The paths an interruption message says were kept (its ``rm -rf`` command)."""
    match = re.search(r"rm -rf (.+)$", message)
    return [Path(p) for p in shlex.split(match[1])] if match else []


def interrupted_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("interrupted")]
    assert len(lines) == 1, stderr
    return lines[0]


CROSSMATCH_POINTS = {  # (the catalog being written, the run's work files) -> reached
    "reading": lambda written, work: (work / "inputs").is_dir(),
    "partitioning": lambda written, work: (work / "plan.json").is_file(),
    "matching": lambda written, work: any(written.glob("dataset/Norder=*/Dir=*/Npix=*.parquet")),
}


@pytest.mark.slow
@pytest.mark.parametrize("replace", [False, True], ids=["new", "replace"])
@pytest.mark.parametrize("point", list(CROSSMATCH_POINTS))
def test_an_interrupted_crossmatch_keeps_what_it_says_and_resumes(run_survey, matched, point,
                                                                  replace, tmp_path):
    out = tmp_path / "cat"
    old = None
    if replace:
        shutil.copytree(matched, out)
        old = tree(out)
    args = ["crossmatch", run_survey / "legacysurvey", run_survey / "desi", "--out", out,
            "--max-rows", "100"] + (["--overwrite"] if replace else [])
    written = tmp_path / ".cat.partial" if replace else out
    proc = start(*args)
    signalled = wait_for(
        lambda: CROSSMATCH_POINTS[point](written, tmp_path / ".cat.astroembed-staging"), proc)
    if signalled:
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    if not signalled:
        pytest.skip(f"the cross-match finished before reaching '{point}'")
    assert proc.returncode == 130, stderr
    message = interrupted_line(stderr)
    kept = kept_paths(message)
    expected = {".cat.astroembed.lock"} | {p.name for p in kept} | ({"cat"} if replace else set())
    assert {p.name for p in tmp_path.iterdir()} == expected, message
    if kept:
        assert "same command again to resume" in message
        for p in kept:
            assert str(p) in message and p.exists()
        if not replace:  # the new catalog is there, and says what happened to it
            info = cli("info", out).stdout
            assert "a run was interrupted" in info.splitlines()[0]
            assert str(tmp_path / ".cat.astroembed-staging") in info
    else:
        assert "nothing was kept" in message
    if old is not None:
        assert tree(out) == old  # the catalog being replaced is untouched
    again = cli("-q", *args)
    assert again.returncode == 0, again.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"cat", ".cat.astroembed.lock"}
    assert cli("info", out).stdout.splitlines()[0].endswith("complete")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_embed_keeps_the_tiles_it_finished(run_survey, sig, tmp_path):
    out = tmp_path / "cat"
    astroembed.crossmatch(run_survey / "legacysurvey", run_survey / "desi", out,
                                  max_rows=60)
    tiles = list((out / "main" / "dataset").rglob("Npix=*.parquet"))

    def embedded() -> list[Path]:
        done = []
        for t in tiles:
            try:
                if "embedding_image" in pq.read_schema(t).names:
                    done.append(t)
            except OSError:  # a tile being swapped in
                pass
        return done

    proc = start("embed", "--catalog", out, "--batch-size", "8")
    assert wait_for(lambda: len(embedded()) >= 1, proc), proc.communicate()[1]
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the embed run finished before the signal arrived")
    assert proc.returncode == 130, stderr
    message = interrupted_line(stderr)
    assert sig.name in message
    done = int(re.search(r"(\d+) of \d+ tiles were embedded", message)[1])
    assert done == len(embedded()) and 1 <= done < len(tiles)
    assert not list(out.rglob("*.tmp"))
    assert {p.name for p in tmp_path.iterdir()} == {"cat", ".cat.astroembed.lock"}
    assert "incomplete" in cli("info", out).stdout.splitlines()[0].lower()
    again = cli("-q", "embed", "--catalog", out)
    assert again.returncode == 0, again.stderr
    assert len(embedded()) == len(tiles)


@pytest.mark.slow
@pytest.mark.parametrize("at", ["crossmatch_full", "embed_start"])
def test_an_interrupted_run_is_logged_as_such_and_says_what_it_kept(run_survey, at, tmp_path):
    shutil.copytree(run_survey, tmp_path / "in")
    config = tmp_path / "pipe.toml"
    config.write_text('images = "in/legacysurvey"\nspectra = "in/desi"\ncatalog = "out/cat"\n'
                      '[crossmatch]\nmax_rows = 200\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*EXE, "run", str(config), "--log-format", "json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events = []
    for line in proc.stderr:
        events.append(json.loads(line))
        if events[-1]["event"] == at:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    proc.wait(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, rest
    events += [json.loads(ln) for ln in rest.splitlines() if ln.startswith("{")]
    names = [e["event"] for e in events]
    assert "run_interrupted" in names and "run_failed" not in names
    logged = next(e for e in events if e["event"] == "run_interrupted")
    assert logged["level"] == "warning" and "KeyboardInterrupt" not in logged["message"]
    message = interrupted_line(rest)
    assert "same command again" in message
    out = tmp_path / "out"
    kept = kept_paths(message)
    assert {p.name for p in out.iterdir()} == \
        {".cat.astroembed.lock"} | {p.name for p in kept} | ({"cat"} if at == "embed_start" else set())
    if at == "embed_start":  # the cross-match was recorded; the run's outcome too
        state = json.loads((out / "cat" / "astroembed_state.json").read_text())
        assert state["last_run"]["outcome"] == "interrupted"
    again = subprocess.run([*EXE, "-q", "run", str(config)], cwd=tmp_path, capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert {p.name for p in out.iterdir()} == {"cat", ".cat.astroembed.lock"}


def test_a_local_cluster_leaves_no_gc_callback_that_would_swallow_ctrl_c():
    """Python ignores an exception raised inside a gc callback, so a SIGINT landing in one is
    lost; distributed's in-process scheduler and workers install one."""
    import gc

    from astroembed.compute import dask_client

    with dask_client(None, 1, processes=False):
        watchers = [cb for cb in gc.callbacks
                    if type(getattr(cb, "__self__", None)).__module__.startswith("distributed")]
        assert not watchers
