"""``ipgnn-robustness``: how a trained policy's decentralised execution degrades when its links lose or delay
messages, against the classic controllers on the same engine and episodes.

::

    ipgnn-robustness --checkpoints results/manhattan96_sumo/manhattan96/ipsac/seed*/checkpoints/latest.pt \\
        --drop 0 0.1 0.3 0.5 1 --delay 1 2 4 --fallback last own --out results/robustness_manhattan96

For every checkpoint (one per training seed) and link setting it runs
:class:`ipgnn.decentralised.DecentralisedPolicy` greedily on that seed's evaluation episodes
(:func:`ipgnn.seeding.eval_seed`), the episodes its training was judged on, and evaluates FixedTime and
MaxPressure on the same episodes (:mod:`ipgnn.references`, cached). The drop sweep has no delay; the
delay sweep loses no message. It writes ``runs.csv`` (one row per checkpoint and setting), ``summary.csv``
and ``summary.md`` (mean ± population std over checkpoints) and ``robustness_<scenario>.png`` (ATT against
the drop probability and against the delay, one line per fallback, the references as horizontal lines).

``--processes 0`` (default) runs the agents in this process; the links and mailboxes are the same code as
with worker processes, and the actions are identical (``tests/test_decentralised.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from ipgnn.compare import mean_std

METRIC = "eval/average_travel_time"


def _settings(drops: list[float], delays: list[int], fallbacks: list[str]) -> list[tuple[float, int, str]]:
    """(drop, delay, fallback) to run: the drop sweep at delay 0, the delay sweep at drop 0, each per
    fallback; perfect links once (every fallback is the same there)."""
    out = [(0.0, 0, fallbacks[0])]
    for fb in fallbacks:
        out += [(p, 0, fb) for p in drops if p > 0]
        out += [(0.0, d, fb) for d in delays if d > 0]
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipgnn-robustness",
        description="ATT of decentralised execution against message loss and delay, with "
        "FixedTime and MaxPressure on the same engine and episodes (module ipgnn.robustness).",
    )
    parser.add_argument("--checkpoints", nargs="+", help="one checkpoint per training seed")
    parser.add_argument("--replot", action="store_true", help="only redraw the figure from --out's summary.csv")
    parser.add_argument("--drop", type=float, nargs="+", default=[0.0, 0.1, 0.3, 0.5, 1.0])
    parser.add_argument("--delay", type=int, nargs="+", default=[1, 2, 4], help="delays in rounds (at drop 0)")
    parser.add_argument("--fallback", nargs="+", choices=["last", "own", "skip"], default=["last", "own"])
    parser.add_argument("--episodes", type=int, default=1, help="evaluation episodes per checkpoint and setting")
    parser.add_argument("--processes", type=int, default=0, help="worker processes (0: in this process)")
    parser.add_argument("--out", required=True, help="directory for runs.csv, summary.{csv,md} and the figure")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep and write its results. Every argument and checkpoint is checked first (:func:`_checked`):
    a bad one exits 2 with one line, before any environment is built or anything is written."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.replot:
        return _replot(Path(args.out))
    try:
        out, saved, settings, links = _checked(args)
    except ValueError as exc:  # ConfigError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfgs = [s.cfg for s in saved]
    scenario = cfgs[0].name
    rows, refs, engine = _sweep(args, saved, settings, links)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "runs.csv", rows)
    summary = _summarise(rows, refs)
    _write_csv(out / "summary.csv", summary)
    seeds = sorted(refs)
    md = _markdown(summary, scenario, engine, seeds, args.episodes, cfgs[0].env.max_steps)
    (out / "summary.md").write_text("\n".join(md) + "\n")
    fig_path = _plot(summary, out / f"robustness_{scenario}.png", f"{scenario} ({engine}), seeds {seeds}")
    print("\n".join(md))
    print(json.dumps({"out": str(out), "figure": str(fig_path)}))
    return 0


def _checked(args: argparse.Namespace) -> tuple[Path, list, list, dict]:
    """``(out, saved, settings, links)`` once every argument is in range and every checkpoint is a traffic
    run's intention-propagation policy (the sweep measures ATT against the traffic controllers), one per
    seed, of one task. Raises ``ValueError`` naming the argument or file; reads checkpoints, builds nothing."""
    from ipgnn.cli import MAX_DELAY, MAX_EPISODES, MAX_PROCESSES, check_count, check_output
    from ipgnn.config import clip
    from ipgnn.decentralised import Links
    from ipgnn.runs import read_checkpoint

    if not args.checkpoints:
        raise ValueError("pass --checkpoints (one per training seed), or --replot")
    check_count("--episodes", args.episodes, 1, MAX_EPISODES)
    check_count("--processes", args.processes, 0, MAX_PROCESSES, " (and at most one per agent)")
    for d in args.delay:
        check_count("--delay", d, 0, MAX_DELAY, " rounds (a longer delay loses every message: --drop 1)")
    out = check_output(args.out, "--out", directory=True)
    settings = _settings(args.drop, args.delay, args.fallback)
    try:
        for p in args.drop:  # each one: the sweep leaves out drop 0 (and a NaN would compare as no drop)
            Links(drop=p)
        links = {s: Links(*s) for s in settings}
        saved = [read_checkpoint(p) for p in args.checkpoints]  # every file checked before any episode is played
    except (FileNotFoundError, KeyError) as exc:
        raise ValueError(str(exc)) from None
    except ValueError as exc:
        raise ValueError(f"--{exc}" if str(exc).startswith(("drop:", "delay:")) else str(exc)) from None
    for s in saved:
        if s.cfg.env.task != "traffic" or s.cfg.algo.name != "ipsac":
            raise ValueError(
                f"checkpoint '{clip(str(s.path))}' is a {s.cfg.env.task} task trained with {s.cfg.algo.name}: "
                "ipgnn-robustness measures a traffic policy's travel time (algo ipsac, env.task traffic); for "
                "another task use ipgnn-eval --checkpoint CKPT --decentralised --drop P --delay D (it reports returns)"
            )
    if len({s.cfg.seed for s in saved}) < len(saved):
        raise ValueError("two checkpoints have the same seed: pass one checkpoint per training seed")
    if len({json.dumps(s.cfg.env.model_dump(mode="json"), sort_keys=True) for s in saved}) > 1:
        raise ValueError("the checkpoints are of different tasks (env sections differ): pass one task's seeds")
    return out, saved, settings, links


def _sweep(args: argparse.Namespace, saved: list, settings: list, links: dict) -> tuple[list[dict], dict, str | None]:
    """Every checkpoint under every link setting, greedily on its seed's evaluation episodes, and the
    references on the same episodes: the rows of ``runs.csv``, the references per seed and the engine."""
    from tqdm.auto import tqdm

    from ipgnn import references
    from ipgnn.runs import load_run

    rows, refs, engine = [], {}, None
    bar = tqdm(total=len(saved) * len(settings), desc="robustness", unit="setting")
    for path, one in zip(args.checkpoints, saved):
        with load_run(one) as run:
            cfg, env, algo = run
            engine = getattr(env, "reference_key", "").split(":")[0] or cfg.env.options.get("engine")
            refs[cfg.seed] = references.reference_results(env, cfg.env.model_dump(mode="json"), args.episodes, cfg.seed)
            for setting in settings:
                metrics, row = _run_setting(algo, env, cfg.seed, links[setting], args)
                rows.append({"checkpoint": path, "seed": cfg.seed, "drop": setting[0], "delay": setting[1]} | row)
                bar.set_postfix(
                    seed=cfg.seed, drop=setting[0], delay=setting[1], fb=setting[2], att=f"{metrics[METRIC]:.1f}"
                )
                bar.update()
    bar.close()
    return rows, refs, engine


def _run_setting(algo, env, seed: int, links, args: argparse.Namespace) -> tuple[dict, dict]:
    """One checkpoint under one link setting, on its seed's evaluation episodes: the evaluation metrics and
    the row's columns from the fallback on."""
    from ipgnn.decentralised import decentralised_policy
    from ipgnn.runs import evaluate

    act = decentralised_policy(algo, env.num_agents, links, args.processes)
    counted = _Counted(act, algo)
    try:
        metrics = evaluate(counted, env, args.episodes, seed)
        stats = act.stats
    finally:
        act.close()
    row = {
        "fallback": links.fallback,
        "att": metrics[METRIC],
        "throughput": metrics.get("eval/throughput"),
        "lost": stats["messages_lost"] / max(1.0, stats["messages_sent"]),
        "changed": counted.changed / max(1, counted.decisions),
        "bytes_per_agent_round": stats["bytes_per_agent_round"],
    }
    return metrics, row


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _markdown(summary: list[dict], scenario: str, engine, seeds: list[int], episodes: int, max_steps: int) -> list[str]:
    """The lines of ``summary.md``: the decentralised settings, then the references."""
    md = [
        f"# Decentralised execution under lossy links: {scenario} ({engine})",
        "",
        f"ATT (s, lower is better), mean ± population std over checkpoints of seeds {seeds}, "
        f"{episodes} evaluation episode(s) each of {max_steps} decisions from each seed's own "
        "evaluation stream; FixedTime and MaxPressure on the same episodes.",
        "",
        "'actions changed': the share of agent decisions that differ from the central network's greedy action on "
        "the same observation.",
        "",
        "| drop | delay (rounds) | fallback | ATT (s) | messages lost | actions changed | bytes per agent and round |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        if s["controller"] == "decentralised":
            md.append(
                f"| {s['drop']:g} | {s['delay']} | {s['fallback']} | {s['att_mean']:.1f} ± {s['att_std']:.1f} "
                f"| {100 * s['lost']:.0f} % | {100 * s['changed']:.1f} % | {s['bytes_per_agent_round']:.0f} |"
            )
    for s in summary:
        if s["controller"] != "decentralised":
            md.append(f"| {s['controller']} | | | {s['att_mean']:.1f} ± {s['att_std']:.1f} | | | |")
    return md


class _Counted:
    """The decentralised policy, counting the agent decisions in which it differs from the central network's
    greedy action on the same observation (what the lost or late messages changed)."""

    def __init__(self, act, algo):
        self.act, self.algo = act, algo
        self.begin_episode = act.begin_episode
        self.changed = self.decisions = 0

    def __call__(self, obs):
        action = self.act(obs)
        self.changed += int((action != self.algo.act(obs, deterministic=True)).sum())
        self.decisions += action.numel()
        return action


def _summarise(rows: list[dict], refs: dict[int, dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["drop"], r["delay"], r["fallback"]), []).append(r)
    summary = []
    for (drop, delay, fb), rs in groups.items():
        m, s = mean_std([r["att"] for r in rs])
        summary.append(
            {
                "controller": "decentralised",
                "drop": drop,
                "delay": delay,
                "fallback": fb,
                "att_mean": m,
                "att_std": s,
                "lost": statistics.fmean(r["lost"] for r in rs),
                "changed": statistics.fmean(r["changed"] for r in rs),
                "bytes_per_agent_round": statistics.fmean(r["bytes_per_agent_round"] for r in rs),
                "n": len(rs),
            }
        )
    for name in sorted({n for r in refs.values() for n in r}):
        key = METRIC.split("/", 1)[1]  # references are stored without the eval/ prefix
        vals = [r[name][key] for r in refs.values() if name in r and key in r[name]]
        if vals:
            m, s = mean_std(vals)
            summary.append(
                {
                    "controller": name,
                    "drop": "",
                    "delay": "",
                    "fallback": "",
                    "att_mean": m,
                    "att_std": s,
                    "lost": "",
                    "changed": "",
                    "bytes_per_agent_round": "",
                    "n": len(vals),
                }
            )
    return summary


def _replot(out: Path) -> int:
    """Redraw ``robustness_<scenario>.png`` from ``out/summary.csv``, ``runs.csv`` and ``summary.md``'s title;
    exit 2 with one line when they are missing or are not a sweep's."""
    from ipgnn.config import clip

    shown = clip(str(out))
    try:
        with open(out / "summary.csv", newline="") as f:
            summary = list(csv.DictReader(f))
        title = (out / "summary.md").read_text().splitlines()[0]
        with open(out / "runs.csv", newline="") as f:
            seeds = sorted({int(r["seed"]) for r in csv.DictReader(f)})
    except OSError as exc:
        print(f"error: --replot needs the summary of an earlier sweep in --out: {clip(str(exc))}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, IndexError, UnicodeDecodeError) as exc:
        print(f"error: --replot: '{shown}' does not hold an ipgnn-robustness sweep's files ({exc!r})", file=sys.stderr)
        return 2
    try:
        for s in summary:
            for k in ("att_mean", "att_std"):
                s[k] = float(s[k])
            if s["controller"] == "decentralised":
                s["drop"], s["delay"] = float(s["drop"]), int(s["delay"])
        scenario, rest = title.split(": ", 1)[1].split(" ", 1)
    except (KeyError, ValueError, IndexError) as exc:
        print(f"error: --replot: '{shown}/summary.*' is not an ipgnn-robustness summary ({exc!r})", file=sys.stderr)
        return 2
    print(_plot(summary, out / f"robustness_{scenario}.png", f"{scenario} {rest}, seeds {seeds}"))
    return 0


def _plot(summary: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dec = [s for s in summary if s["controller"] == "decentralised"]
    perfect = next(s for s in dec if s["drop"] == 0 and s["delay"] == 0)
    fallbacks = sorted({s["fallback"] for s in dec}, key=["last", "own", "skip"].index)
    refs = [s for s in summary if s["controller"] != "decentralised"]
    # the y range: the policy's curves and the best reference, with a margin; weaker references are named
    low = min([s["att_mean"] - s["att_std"] for s in dec] + [min((s["att_mean"] for s in refs), default=1e9)])
    high = max([s["att_mean"] + s["att_std"] for s in dec] + [min((s["att_mean"] for s in refs), default=-1e9)])
    pad = max(1.0, 0.15 * (high - low))
    bottom, top = low - pad, high + 2 * pad
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in ((axes[0], "drop", "message-drop probability"), (axes[1], "delay", "delay (rounds)")):
        other = "delay" if key == "drop" else "drop"
        for fb in fallbacks:
            pts = [perfect] + [s for s in dec if s["fallback"] == fb and s[other] == 0 and s[key] != 0]
            pts.sort(key=lambda s: s[key])
            if len(pts) > 1:
                ax.errorbar(
                    [s[key] for s in pts],
                    [s["att_mean"] for s in pts],
                    yerr=[s["att_std"] for s in pts],
                    marker="o",
                    capsize=3,
                    label=f"IP-SAC, decentralised, fallback: {fb}",
                )
        off_scale = []
        for s, style in zip(refs, ("--", ":", "-.")):
            if s["att_mean"] > top:  # far above the policy's curves: named, not drawn, so the curves keep their scale
                off_scale.append(f"{s['controller']} {s['att_mean']:.1f} ± {s['att_std']:.1f} s (above)")
                continue
            ax.axhline(s["att_mean"], color="k", linestyle=style, label=s["controller"])
            ax.axhspan(s["att_mean"] - s["att_std"], s["att_mean"] + s["att_std"], color="k", alpha=0.08)
        if off_scale:
            ax.text(0.02, 0.97, "off scale: " + "; ".join(off_scale), transform=ax.transAxes, va="top", fontsize=8)
        ax.set_ylim(bottom, top)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("average travel time (s)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
