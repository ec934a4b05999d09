"""Are two runs the same run? Compares their ``metrics.jsonl`` row by row, every logged value except the
wall-clock rates (``charts/*_per_s``, ``charts/eta*``), which depend on the machine's load.

    python benchmarks/same_runs.py RUN_A RUN_B [RUN_A2 RUN_B2 ...]    # run directories, in pairs

Used to check that a change meant to be behaviour-neutral (a refactor, a formatter) is: a run started after it
must log exactly what the same run logged before it (the same seed gives the same run on CPU). Exit status 0 when
every pair is identical, 1 otherwise, with the first difference printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLOCK = ("_per_s", "charts/eta", "wall")


def rows(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl (pass run directories)")
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append({k: v for k, v in json.loads(line).items() if not any(c in k for c in CLOCK)})
    return out


def first_difference(a: list[dict], b: list[dict]) -> str | None:
    if len(a) != len(b):
        return f"{len(a)} rows against {len(b)}"
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            keys = sorted(k2 for k2 in x.keys() | y.keys() if x.get(k2) != y.get(k2))
            shown = ", ".join(f"{q}: {x.get(q)} vs {y.get(q)}" for q in keys[:4])
            return f"row {k} (env_step {x.get('env_step')}): {shown}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    status = 0
    for a, b in zip(argv[::2], argv[1::2]):
        ra, rb = rows(Path(a)), rows(Path(b))
        diff = first_difference(ra, rb)
        verdict = "same" if diff is None else "DIFFERENT"
        print(f"{verdict}: {a} vs {b} ({len(ra)} rows)" + ("" if diff is None else f": {diff}"))
        status |= diff is not None
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
