"""The comparison table, from the campaign's summaries (``results/paper/<task>/summary.csv``).

    python benchmarks/paper_table.py            # rewrites the table between the markers of its pages
    python benchmarks/paper_table.py --print    # prints it only

The table lives on the Results page (``docs/results.md``) with its findings, and as the headline of
``README.md``; both hold it between ``<!-- paper-table:begin -->`` and ``<!-- paper-table:end -->``.

One row per task of the paper's comparison (Fig. 3, 4, 5): each method's final greedy evaluation, mean ± std
over seeds (ATT in seconds on traffic, lower is better; team return elsewhere, higher is better), the best
method of the row in bold, the traffic references (FixedTime, MaxPressure) on the same seeds' episodes, and
what the paper reports for that task. Tasks without results say so. The "random" column is uniformly random
actions on the same seeds' evaluation episodes (``benchmarks/random_reference.py``), where it has been computed.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = [
    ("ipsac", "IP-SAC"),
    ("dgn", "DGN"),
    ("pic", "PIC"),
    ("maddpg_s", "MADDPG-S"),
    ("maddpg", "MADDPG"),
    ("qmix", "QMIX"),
    ("iql", "IQL"),
]
# (results dir, label, metric, lower is better, the paper's ranking for the task, as its text and figure state)
TASKS = [
    (
        "hangzhou16",
        "Hangzhou 4×4, real flow, N = 16 (Fig. 5a)",
        "average_travel_time",
        True,
        "IP best (Fig. 5a; no ranking of the baselines in the text)",
    ),
    ("grid7x7", "Grid 7×7, N = 49 (Fig. 5b)", "average_travel_time", True, "IP best (Fig. 5b)"),
    (
        "manhattan96",
        "Manhattan, N = 96 (Fig. 3a, 5c)",
        "average_travel_time",
        True,
        "IP best; PIC and DGN next, the others behind (sec. 5.2)",
    ),
    (
        "spread30",
        "Cooperative navigation, N = 30 (Fig. 4a, 8b)",
        "episode_return",
        False,
        "IP best; DGN above QMIX, MADDPG-S above MADDPG; IQL and MADDPG fail (app. C)",
    ),
    ("hetero100", "Heterogeneous navigation, N = 100 (Fig. 4b)", "episode_return", False, "IP best (Fig. 4b)"),
]
GPU_ONLY = [
    ("Grid 15×15, N = 225 (Fig. 3b)", "IP best; PIC and DGN high variance (sec. 5.2)"),
    ("Grid 35×35, N = 1225 (Fig. 3c)", "IP best by a wide margin; MADDPG-S second (sec. 5.2)"),
]
BEGIN, END = "<!-- paper-table:begin -->", "<!-- paper-table:end -->"
# the pages that hold the table between the markers: the Results page, and the README's headline copy
PAGES = ["docs/results.md", "README.md"]


def _read(task: str) -> dict[str, dict[str, str]]:
    path = ROOT / "results" / "paper" / task / "summary.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        return {r["algo"]: r for r in csv.DictReader(f)}


def _cell(row: dict[str, str] | None, metric: str) -> tuple[str, float | None]:
    if not row or not row.get(f"final/{metric}/mean"):
        return "–", None
    mean, std = float(row[f"final/{metric}/mean"]), float(row[f"final/{metric}/std"])
    digits = 1 if abs(mean) < 1e4 else 0
    return f"{mean:.{digits}f} ± {std:.{digits}f}", mean


def machine_time(task: str) -> str:
    """The task's runs' wall-clock time added up (each run's ``wall_s``: one worker, one torch thread)."""
    import json

    total = 0.0
    for res in (ROOT / "results" / "paper" / task).rglob("result.json"):
        total += float(json.loads(res.read_text()).get("wall_s", 0.0))
    return f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.0f} min"


def _random(task: str, metric: str) -> str:
    """Uniformly random actions on the task's evaluation episodes (results/paper/<task>/random.json), if computed."""
    import json

    path = ROOT / "results" / "paper" / task / "random.json"
    if not path.is_file():
        return "–"
    r = json.loads(path.read_text())
    return _cell(
        {
            f"final/{metric}/mean": r.get(f"eval/{metric}/mean", ""),
            f"final/{metric}/std": r.get(f"eval/{metric}/std", ""),
        },
        metric,
    )[0]


def table() -> str:
    head = (
        ["task", "seeds"]
        + [name for _, name in METHODS]
        + ["random", "FixedTime", "MaxPressure", "machine time", "the paper"]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, label, metric, lower, paper in TASKS:
        rows = _read(task)
        if not rows:
            lines.append(f"| {label} | not run yet | " + " | ".join(["–"] * (len(METHODS) + 4)) + f" | {paper} |")
            continue
        cells = {algo: _cell(rows.get(algo), metric) for algo, _ in METHODS}
        scored = {a: m for a, (_, m) in cells.items() if m is not None}
        best = (min if lower else max)(scored, key=scored.__getitem__) if scored else None
        seeds = sorted({r["seeds"] for a, r in rows.items() if a in dict(METHODS)})
        done = sum(1 for a, _ in METHODS if a in rows)
        out = [
            label,
            "/".join(seeds) + ("" if done == len(METHODS) else f" (partial: {done} of {len(METHODS)} methods)"),
        ]
        out += [f"**{text}**" if algo == best else text for algo, (text, _) in cells.items()]
        out.append(_random(task, metric))
        out += [_cell(rows.get(f"{ref} (reference)"), metric)[0] for ref in ("FixedTime", "MaxPressure")]
        out.append(machine_time(task))
        lines.append("| " + " | ".join(out + [paper]) + " |")
    for label, paper in GPU_ONLY:
        lines.append(
            f"| {label} | not run (needs a GPU: benchmarks/gpu_comparison.sh) | "
            + " | ".join(["–"] * (len(METHODS) + 4))
            + f" | {paper} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the table, leave the pages alone")
    args = parser.parse_args()
    text = table()
    if args.print:
        print(text)
        return
    for page in PAGES:
        write_between_markers(ROOT / page, text)
    print(text)


def write_between_markers(path: Path, text: str) -> None:
    """Replace what ``path`` holds between :data:`BEGIN` and :data:`END` with ``text``."""
    body = path.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to put the table between")
    body = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", body, flags=re.S)
    path.write_text(body)


if __name__ == "__main__":
    main()
