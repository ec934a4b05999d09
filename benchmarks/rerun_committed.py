"""Run committed runs again from their own ``config.yaml`` and check that the code of today logs exactly what
the code that made them logged (every value of ``metrics.jsonl`` except wall-clock rates; see ``same_runs.py``).

    python benchmarks/rerun_committed.py results/paper/hangzhou16/hangzhou16/*/seed0 [--out DIR]

Each run is trained again with one torch thread into ``DIR/<n>`` (default: a temporary directory) and compared
with the committed one. Exit status 0 when every rerun is the same run, 1 otherwise. This is the check that a
behaviour-neutral change (a refactor) leaves every committed figure as it is.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from same_runs import first_difference, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="committed run directories (with config.yaml)")
    parser.add_argument("--out", type=Path, default=None, help="where the reruns go (default: a temporary dir)")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="rerun-"))
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    status = 0
    for n, run in enumerate(args.runs):
        if not (run / "config.yaml").is_file():
            print(f"{run}: no config.yaml (pass committed run directories)", file=sys.stderr)
            return 2
        again = out / f"{n}-{run.parent.name}-{run.name}"
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "ipgnn.cli_entry", "train", "--config", str(run / "config.yaml")]
        cmd += ["--run-dir", str(again), "--threads=1", "--logger.mode=disabled", "--logger.progress=false"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"FAILED: {run}: exit {done.returncode}\n{done.stderr[-2000:]}", file=sys.stderr)
            status = 1
            continue
        diff = first_difference(rows(run), rows(again))
        verdict = "same" if diff is None else f"DIFFERENT: {diff}"
        print(f"{verdict}: {run} ({len(rows(run))} rows, rerun in {time.perf_counter() - start:.0f} s)", flush=True)
        status |= diff is not None
    return status


if __name__ == "__main__":
    sys.exit(main())
