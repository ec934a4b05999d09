"""The traffic field's benchmark table and figure (docs/traffic.md#the-fields-benchmark): IP-SAC and CoLight
(``results/benchmark/learned``, written by ``bash benchmarks/paper_campaign.sh bench-jn1 ... bench-hz2``)
against the rules (``results/benchmark/rules.csv``, written by ``python benchmarks/traffic_rules.py``). Variants
in folders beside the runs' are rows of their own: ``learned_running`` (IP-SAC with the ``running`` feature,
steps ``bench-<set>-running``), ``learned_u1`` (one gradient step per decision, steps ``bench-<set>-u1``) and
``learned_long`` (twice the training budget, steps ``bench-<set>-long``).

    python benchmarks/traffic_table.py        # writes results/benchmark/table.{md,csv} and att_vs_episodes.png

A learned cell is the mean ± standard deviation over seeds of each run's last evaluation (one one-hour
episode, every 10 training episodes), with the number of seeds; a run still training counts only when
``--partial`` is given, and its cell then says how many of its training episodes it had seen. The
figure draws ATT against training episodes (mean over seeds, ± std band) with each rule as a horizontal
line, one panel per data set. Nothing is trained or simulated here: it reads the runs' ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from ipgnn.compare import mean_std, seed_band
from ipgnn.logger import read_metrics

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["jn1", "jn2", "jn3", "hz1", "hz2"]
LEARNED = {"ipsac": "IP-SAC", "colight": "CoLight"}
# variants, each in a folder beside the runs' (results/benchmark/learned_running, ..._u1): folder suffix -> row suffix
VARIANTS = {"_running": " + running", "_u1": ", 1 step/decision", "_long": ", 200 episodes"}
RULES = ["Advanced-MP", "MaxPressure", "SOTL", "FixedTime"]
KEY = "eval/average_travel_time"


def learned_runs(root: Path, partial: bool, suffix: str = "") -> dict[tuple[str, str], list[dict]]:
    """(data set, row label) -> one entry per seed: its evaluation curve against training episodes, whether it
    finished, its budget in episodes and its schedule (both from the run's ``config.yaml``: the episode length
    is its ``env.max_steps``). The label is the method's (``IP-SAC``, ``CoLight``) followed by ``suffix``, which
    names the variant a root holds."""
    import yaml

    runs: dict[tuple[str, str], list[dict]] = {}
    for metrics in sorted(root.glob("*/*/seed*/metrics.jsonl")):
        dataset, algo, seed = metrics.parts[-4], metrics.parts[-3], metrics.parts[-2]
        done = (metrics.parent / "result.json").is_file()
        if not done and not partial:
            continue
        cfg = yaml.safe_load((metrics.parent / "config.yaml").read_text()) or {}
        per_episode, t = cfg["env"]["max_steps"], cfg["train"]
        curve = [(r["env_step"] / per_episode, r[KEY]) for r in read_metrics(metrics) if KEY in r]
        if curve:
            runs.setdefault((dataset, LEARNED.get(algo, algo) + suffix), []).append({
                "seed": seed, "curve": curve, "done": done, "episodes": t["total_steps"] / per_episode,
                "schedule": f"{t['total_steps']} decisions = {t['total_steps'] / per_episode:.0f} episodes, "
                f"{t['gradient_steps']} gradient steps every {t['update_every']} decisions",
            })  # fmt: skip
    return runs


def schedules(runs: dict, suffix: str) -> set[str]:
    """The distinct budgets and update schedules of the rows ending in ``suffix`` (``""``: the main rows):
    the table states what it compares."""
    variant = set(VARIANTS.values()) - {suffix}
    return {
        s["schedule"]
        for (_, label), seeds in runs.items()
        if label.endswith(suffix) and not any(label.endswith(v) for v in variant if v)
        for s in seeds
    }


def rule_rows(path: Path, interval: int = 10) -> dict[tuple[str, str], float]:
    """(data set, rule) -> CityFlow's ATT at ``interval``-s decisions."""
    with open(path, newline="") as f:
        return {
            (r["dataset"], r["rule"]): float(r["average_travel_time"])
            for r in csv.DictReader(f)
            if int(r["interval_s"]) == interval
        }


def row_labels(runs: dict) -> list[str]:
    """The learned rows: each method, then its variants that have runs (IP-SAC and CoLight always shown)."""
    found = {label for _, label in runs}
    return [m + v for m in LEARNED.values() for v in ["", *VARIANTS.values()] if not v or m + v in found]


def table(runs: dict, rules: dict, datasets: list[str]) -> tuple[list[dict], str]:
    """The CSV rows and the Markdown table (IP-SAC, CoLight, their variants, then the rules), best cell of a
    column in bold."""
    rows, cells = [], {}
    labels = row_labels(runs)
    for label in labels:
        for d in datasets:
            seeds = runs.get((d, label), [])
            if not seeds:
                cells[label, d] = "—"
                continue
            finals = [s["curve"][-1][1] for s in seeds]
            m, sd = mean_std(finals)
            episodes = min(s["curve"][-1][0] for s in seeds)
            unfinished = sum(not s["done"] for s in seeds)
            budget = max(s["episodes"] for s in seeds)
            cells[label, d] = f"{m:.1f} ± {sd:.1f} (n={len(seeds)}" + (
                f"; {unfinished} still training, at ≥ {episodes:.0f} of {budget:.0f} episodes)" if unfinished else ")"
            )
            rows.append(
                {"dataset": d, "method": label, "att_mean": round(m, 2), "att_std": round(sd, 2),
                 "seeds": len(seeds), "unfinished": unfinished, "min_episodes": round(episodes, 1)}
            )  # fmt: skip
    for rule in RULES:
        for d in datasets:
            if (d, rule) in rules:
                cells[rule, d] = f"{rules[d, rule]:.1f}"
                rows.append({"dataset": d, "method": rule, "att_mean": rules[d, rule], "att_std": 0.0,
                             "seeds": 1, "unfinished": 0, "min_episodes": 0})  # fmt: skip
    lines = ["| method | " + " | ".join(d.upper() for d in datasets) + " |", "|---|" + "---|" * len(datasets)]
    best = {d: min((r["att_mean"] for r in rows if r["dataset"] == d), default=None) for d in datasets}
    for label in [*labels, *RULES]:
        row = []
        for d in datasets:
            cell = cells.get((label, d), "—")
            mine = [r for r in rows if r["dataset"] == d and r["method"] == label]
            row.append(f"**{cell}**" if mine and mine[0]["att_mean"] == best[d] else cell)
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return rows, "\n".join(lines) + "\n"


def figure(runs: dict, rules: dict, datasets: list[str], path: Path) -> None:
    """ATT against training episodes, one panel per data set: learned rows' mean ± std over seeds (on the
    episodes every seed reached; the seed counts are the table's), the rules as horizontal lines. Each row
    keeps its colour across panels. The axis stops a little above the worst rule, so that the learned curves
    and Advanced-MP stay readable; a row whose curve ends above it is named in the panel with its last value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(datasets), figsize=(3.4 * len(datasets), 3.8), sharex=True, squeeze=False)
    styles = {"Advanced-MP": ("tab:red", "--"), "MaxPressure": ("tab:purple", "-."), "SOTL": ("tab:brown", ":"),
              "FixedTime": ("0.4", (0, (1, 3)))}  # fmt: skip
    palette = ["tab:blue", "tab:cyan", "tab:olive", "tab:orange", "tab:pink", "tab:green", "tab:gray"]
    colour = {label: palette[i % len(palette)] for i, label in enumerate(row_labels(runs))}
    budget = max((s["episodes"] for seeds in runs.values() for s in seeds), default=100)
    for ax, d in zip(axes[0], datasets, strict=True):
        curves, levels = {}, [rules[d, r] for r in RULES if (d, r) in rules]
        for label in row_labels(runs):
            seeds = runs.get((d, label), [])
            if seeds:
                reach = min(s["curve"][-1][0] for s in seeds)
                curves[label] = seed_band([s["curve"] for s in seeds], upto=reach)
        for label, (grid, mean, std) in curves.items():
            ax.plot(grid, mean, marker="o", ms=3, color=colour[label], label=label)
            ax.fill_between(grid, mean - std, mean + std, color=colour[label], alpha=0.2)
        for rule in RULES:
            if (d, rule) in rules:
                ax.axhline(rules[d, rule], color=styles[rule][0], ls=styles[rule][1], lw=1.2, label=rule)
        finals = [float(mean[-1]) for _, mean, _ in curves.values()]
        if not levels and not finals:  # neither runs nor rules for this data set yet: say so rather than fail
            ax.text(0.5, 0.5, "no runs or rules yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(0, budget)
            continue
        # the first, random-phase episode (ATT > 1000 s) would flatten the panel: stop above the worst rule
        top = 1.15 * max(levels) if levels else 1.1 * max(finals)
        ax.set_ylim(0.93 * min(levels + finals), top)
        above = [f"{label}: {mean[-1]:.0f} s" for label, (_, mean, _) in curves.items() if mean[-1] > top]
        if above:
            ax.text(0.97, 0.97, "above the axis:\n" + "\n".join(above), ha="right", va="top", fontsize=7,
                    transform=ax.transAxes, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})  # fmt: skip
        ax.set_title(f"{d.upper()} (CityFlow, 3600 s)")
        ax.set_xlabel("training episodes (1 h each)")
        ax.set_xlim(0, budget)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("average travel time, s (eval)")
    handles = {}
    for ax in axes[0]:
        handles.update({lab: h for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)})
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(REPO / "results" / "benchmark" / "learned"))
    parser.add_argument("--rules", default=str(REPO / "results" / "benchmark" / "rules.csv"))
    parser.add_argument("--out", default=str(REPO / "results" / "benchmark"))
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--partial", action="store_true", help="include runs still training (marked in the table)")
    args = parser.parse_args()
    datasets = args.datasets.split(",")
    main_root = Path(args.runs)
    roots = [(main_root, "")] + [(main_root.with_name(main_root.name + k), v) for k, v in VARIANTS.items()]
    runs = {}
    for root, suffix in roots:
        runs.update(learned_runs(root, args.partial, suffix))
    rules = rule_rows(Path(args.rules))
    rows, md = table(runs, rules, datasets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    budgets = []
    for _, suffix in roots:
        found = ", ".join(sorted(schedules(runs, suffix)))
        if found or not suffix:
            budgets.append(
                f"{'IP-SAC and CoLight' if not suffix else suffix.strip(' ,') + ' rows'}: {found or 'no run'}"
            )
    header = (
        "ATT in seconds (CityFlow's average travel time, vehicles still in the network counted), one-hour "
        "episodes of 10-s decisions with a 5-s yellow; learned rows: mean ± std over seeds of the last "
        f"evaluation, on the budget and schedule of their folder's runs ({'; '.join(budgets)}); "
        "rules: results/benchmark/rules.csv.\n\n"
    )
    (out / "table.md").write_text(header + md)
    figure(runs, rules, datasets, out / "att_vs_episodes.png")
    print(header + md)
    print(f"wrote {out}/table.md, table.csv and att_vs_episodes.png")


if __name__ == "__main__":
    main()
