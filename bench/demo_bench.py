"""How long the two first things a user runs take: ``make demo`` and the quickstart example.

    python bench/demo_bench.py [--work DIR] [--skip-demo] [--skip-quickstart]

Runs ``make demo DEMO=WORK/demo-output`` (the install already done: its stamp is up to date)
and ``examples/quickstart.py WORK/quickstart-output`` in their own processes, timing each
wall to wall, with the load average before and the CPU other processes used meanwhile.
Writes ``bench/results/demo.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchpaths import portable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def _busy_jiffies() -> int:
    """Machine-wide busy CPU time from /proc/stat (all processes), in clock ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def timed(cmd: list[str], cwd: Path) -> dict:
    """Wall seconds of ``cmd``, its own CPU seconds and the cores' worth other processes used."""
    ticks = os.sysconf("SC_CLK_TCK")
    load = os.getloadavg()[0]
    busy0, t0 = _busy_jiffies(), time.perf_counter()
    before = os.times()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    own = (after.children_user - before.children_user) + (after.children_system
                                                          - before.children_system)
    other = max(0.0, (_busy_jiffies() - busy0) / ticks - own) / wall
    out = {"command": " ".join(cmd), "status": "ok" if proc.returncode == 0 else "failed",
           "wall_s": round(wall, 1), "cpu_s": round(own, 1),
           "load_average_before": round(load, 2), "other_cpu": round(other, 2)}
    if proc.returncode:
        out["error"] = (proc.stderr or proc.stdout)[-2000:]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="where the outputs go (default: a temporary directory)")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="astroembed-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "demo", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "runs": {}}
    try:
        if not args.skip_demo:
            report["runs"]["make_demo"] = timed(
                ["make", "demo", f"DEMO={work / 'demo-output'}"], ROOT)
        if not args.skip_quickstart:
            report["runs"]["quickstart"] = timed(
                [sys.executable, "examples/quickstart.py", str(work / "quickstart-output")], ROOT)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(portable(report, work), indent=2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "demo.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if all(r["status"] == "ok" for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
