"""Learning curves of one run, from its ``metrics.jsonl``, as a PNG in the run directory.

Written at the end of every ``ipgnn-train`` run (and on Ctrl-C) as ``<run_dir>/curves.png``; also
``python -m ipgnn.plotting RUN_DIR``. Panels: episode return (training episodes as dots, greedy
evaluation as a line), the three SAC losses, entropy and alpha, and throughput. A task with a headline
metric (traffic: average travel time) shows it in the first panel instead of the return, with its
reference controllers (FixedTime, MaxPressure: :mod:`ipgnn.references`) as horizontal lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ipgnn.logger import read_metrics

PANELS = [
    ("episode return  (sum over agents and steps)", ["train/episode_return", "eval/episode_return"]),
    ("losses", ["losses/q_loss", "losses/value_loss", "losses/policy_loss"]),
    ("entropy and alpha", ["losses/entropy", "losses/alpha"]),
    ("throughput (per second)", ["charts/env_steps_per_s", "charts/updates_per_s"]),
]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the run's curves; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ipgnn.envs import headline_of
    from ipgnn.references import from_rows

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    head = headline_of(rows)
    panels = list(PANELS)
    if head is not None:
        unit = f" ({head.unit})" if head.unit else ""
        better = "lower" if head.lower_is_better else "higher"
        panels[0] = (f"{head.label}{unit}, {better} is better", [f"train/{head.metric}", f"eval/{head.metric}"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r["env_step"], r[key]) for r in rows if key in r]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if key == panels[0][1][0]:
                ax.plot(xs, ys, ".", ms=2, alpha=0.35, label="train (sampling policy)")
            else:
                ax.plot(
                    xs,
                    ys,
                    "-o" if key.startswith("eval/") else "-",
                    ms=3,
                    label="eval (greedy policy)" if key.startswith("eval/") else key.split("/", 1)[1],
                )
        if head is not None and ax is axes.flat[0]:
            for k, (name, metrics) in enumerate(from_rows(rows).items()):
                if head.metric in metrics:
                    ax.axhline(
                        metrics[head.metric],
                        ls="--",
                        lw=1.2,
                        color=f"C{k + 3}",
                        label=f"{name} {metrics[head.metric]:.1f}",
                    )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(run_dir.name)
    path = Path(out) if out else run_dir / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        print("usage: python -m ipgnn.plotting RUN_DIR", file=sys.stderr)
        sys.exit(2)
    print(plot_run(sys.argv[1]))
