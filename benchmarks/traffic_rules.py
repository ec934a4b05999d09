"""The rule rows of the traffic field's benchmark (docs/traffic.md#the-fields-benchmark): FixedTime,
MaxPressure, Advanced-MP and SOTL on the five data sets of ``configs/benchmark/``, one-hour episodes on
CityFlow, at 10-s decisions (LibSignal's and CoLight's protocol) and 15-s decisions (Advanced-XLight's).

    python benchmarks/traffic_rules.py                      # writes results/benchmark/rules.{csv,md}
    python benchmarks/traffic_rules.py --datasets jn1,hz1 --intervals 10

Each rule is evaluated exactly as a learned policy is (``ipgnn.runs.evaluate``: same engine, episode, action
interval and yellow), on the evaluation episode of seed 0; CityFlow gives the same episode for every seed on
these files (measured: ``ipgnn.traffic.cityflow_engine``), so one episode is the whole result.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from ipgnn.config import load_config
from ipgnn.envs import make_env
from ipgnn.runs import evaluate

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["jn1", "jn2", "jn3", "hz1", "hz2"]


def rules_on(dataset: str, interval: int) -> list[dict]:
    cfg = load_config(
        REPO / "configs" / "benchmark" / f"{dataset}.yaml",
        [f"--env.options.action_interval={interval}", f"--env.max_steps={3600 // interval}"],
    )
    env = make_env(cfg.env)
    rows = []
    try:
        for rule, act in env.reference_policies().items():
            start = time.perf_counter()
            m = evaluate(act, env, 1, cfg.seed)
            rows.append(
                {
                    "dataset": dataset,
                    "interval_s": interval,
                    "rule": rule,
                    "average_travel_time": round(m["eval/average_travel_time"], 4),
                    "average_travel_time_arrived": round(m["eval/average_travel_time_arrived"], 4),
                    "throughput": int(m["eval/throughput"]),
                    "wall_s": round(time.perf_counter() - start, 1),
                }
            )
    finally:
        env.close()
    return rows


def markdown(rows: list[dict], intervals: list[int], datasets: list[str]) -> str:
    out = []
    for interval in intervals:
        out += [
            f"ATT in seconds, {interval}-s decisions, 5-s yellow, 3600 s on CityFlow: CityFlow's average travel time "
            "(vehicles still in the network counted) / the arrived vehicles only",
            "",
            "| rule | " + " | ".join(d.upper() for d in datasets) + " |",
            "|---|" + "---|" * len(datasets),
        ]
        for rule in dict.fromkeys(r["rule"] for r in rows):
            cells = []
            for d in datasets:
                (r,) = [r for r in rows if r["rule"] == rule and r["dataset"] == d and r["interval_s"] == interval]
                cells.append(f"{r['average_travel_time']:.1f} / {r['average_travel_time_arrived']:.1f}")
            out.append(f"| {rule} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--intervals", default="10,15")
    parser.add_argument("--out", default=str(REPO / "results" / "benchmark" / "rules"))
    args = parser.parse_args()
    datasets, intervals = args.datasets.split(","), [int(i) for i in args.intervals.split(",")]
    rows = [r for d in datasets for i in intervals for r in rules_on(d, i)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".md").write_text(markdown(rows, intervals, datasets))
    print(markdown(rows, intervals, datasets))
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.md')}; {sum(r['wall_s'] for r in rows):.0f} s")


if __name__ == "__main__":
    main()
