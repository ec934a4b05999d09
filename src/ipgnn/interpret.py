r"""Policy interpretation for traffic-signal control (app. C.3, Fig. 7): does the policy give green to
the movements that carry the traffic?

Following app. C.3 (after Zheng et al., 2019), a trained policy is rolled out with **sampled** actions
:math:`a_i \sim q_i` for ``episodes`` episodes; its decision steps (episodes one after the other) are
grouped into intervals of ``interval`` steps, and per interval:

- a **movement** is one road link of one intersection (``roadLinks``: an incoming road to an outgoing
  road), over all signalised intersections;
- the **vehicle volume distribution** :math:`p`: for each movement, the vehicles on the incoming lanes
  that feed it (the start lanes of its ``laneLinks``) in the state each decision is taken in, summed
  over the interval's decisions, normalised over all movements. A lane that feeds several movements
  splits its vehicles equally among them (the vehicles' turns are not observed), so :math:`p` counts
  every vehicle once;
- the **sampled action distribution** :math:`q`: every sampled phase counts once for each movement it
  gives green (its ``availableRoadLinks``), summed over the interval, normalised over all movements;
- :math:`\mathrm{KL}(p \,\Vert\, q) = \sum_k \tilde p_k \log(\tilde p_k / \tilde q_k)` on the smoothed
  :math:`\tilde p = (p + \epsilon) / (1 + K\epsilon)` (same for :math:`q`; ``K`` movements,
  :math:`\epsilon = 10^{-6}` by default), so a movement with traffic but never green gives a large but
  finite value; and the Euclidean distance :math:`\lVert p - q \rVert_2` on the unsmoothed
  distributions (the paper's second number: 0.0271 for IP on the 7x7 grid).

Movements that are green in *every* action phase of their intersection (the unsignalised right turns
of CityFlow's phase plans) are left out by default: every action greens them, so they carry no
information about the policy and would dominate :math:`q` (in a 4-phase grid they take 4 of the 6
green movements of every phase); ``--include-always-green`` keeps them. An interval without any vehicle
has no volume distribution: its row is ``nan`` and is left out of the means.

Command line (console script ``ipgnn-interpret`` -> :func:`main`)::

    ipgnn-interpret --checkpoint runs/<run>/checkpoints/latest.pt --episodes 5 --interval 20

writes ``interpretation.csv`` (one row per interval) and ``interpretation.png`` (KL and distance per
interval, as Fig. 7, and the overall movement shares) into ``--out`` (default
``<run>/interpretation/``) and prints the means as JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ipgnn.seeding import eval_seed, seed_everything

if TYPE_CHECKING:
    from ipgnn.runs import Run

EPSILON = 1e-6
CSV_NAME = "interpretation.csv"
PNG_NAME = "interpretation.png"


class NotTrafficError(ValueError):
    """The checkpoint's task is not traffic-signal control."""


# ------------------------------------------------------------------------------------------------
# movements


@dataclass
class MovementTable:
    """Index arrays mapping lane counts and phases to movements (built once; no per-step Python loops).

    Attributes:
        names: ``K`` movement names ``"<intersection>:<start road>-><end road>"``.
        agent: ``[K]`` agent (intersection) index of each movement.
        lanes: the CityFlow lane ids (``<road>_<k>``) whose counts are read, in array order.
        vol_movement, vol_lane, vol_weight: ``(movement, lane, weight)`` triples: movement volume =
            sum of ``weight * count[lane]``.
        act_agent, act_action, act_movement: ``(agent, action, movement)`` triples: action ``a`` of
            agent ``i`` gives the movement green.
    """

    names: list[str]
    agent: np.ndarray
    lanes: list[str]
    vol_movement: np.ndarray
    vol_lane: np.ndarray
    vol_weight: np.ndarray
    act_agent: np.ndarray
    act_action: np.ndarray
    act_movement: np.ndarray

    @property
    def num_movements(self) -> int:
        return len(self.names)


def movement_table(scenario: Any, include_always_green: bool = False) -> MovementTable:
    """Movements of a :class:`~ipgnn.traffic.scenario.Scenario` (see the module docstring)."""
    names, agents = [], []
    feeds: list[tuple[int, str]] = []  # (movement, lane) pairs
    act: list[tuple[int, int, int]] = []
    for i, inter in enumerate(scenario.intersections):
        greens = [set(inter.phases[p]) for p in inter.action_phases]
        always = set.intersection(*greens) if greens and not include_always_green else set()
        local = {}
        for k, link in enumerate(inter.road_links):
            if k in always:
                continue
            local[k] = len(names)
            names.append(f"{inter.id}:{link.start_road}->{link.end_road}")
            agents.append(i)
            for lane in sorted({a for a, _ in link.lane_links}):
                feeds.append((local[k], f"{link.start_road}_{lane}"))
        for a, green in enumerate(greens):
            act.extend((i, a, local[k]) for k in sorted(green) if k in local)
    if not names:
        raise ValueError("the scenario has no signalised movement (every road link is green in every phase)")
    lanes = sorted({l for _, l in feeds})
    lane_pos = {l: k for k, l in enumerate(lanes)}
    mov = np.array([m for m, _ in feeds], dtype=np.int64)
    lane = np.array([lane_pos[l] for _, l in feeds], dtype=np.int64)
    share = np.bincount(lane, minlength=len(lanes)).astype(np.float64)  # movements fed by each lane
    acts = np.array(act, dtype=np.int64).reshape(-1, 3)
    return MovementTable(
        names, np.array(agents, dtype=np.int64), lanes, mov, lane, 1.0 / share[lane], acts[:, 0], acts[:, 1], acts[:, 2]
    )


def _segment_sum(values: np.ndarray, segment: np.ndarray, size: int) -> np.ndarray:
    """``out[..., s] = sum of values[..., k] over k with segment[k] == s`` (rows handled at once)."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.reshape(-1, values.shape[-1])
    flat = (np.arange(rows.shape[0])[:, None] * size + segment[None, :]).ravel()
    out = np.bincount(flat, weights=rows.ravel(), minlength=rows.shape[0] * size)
    return out.reshape(*values.shape[:-1], size)


def lane_counts(engine: Any, table: MovementTable) -> np.ndarray:
    """``[L]`` vehicles on each of ``table.lanes`` now (``engine.get_lane_vehicle_count``)."""
    counts = engine.get_lane_vehicle_count()
    return np.fromiter((counts[l] for l in table.lanes), np.float64, len(table.lanes))


def movement_volume(table: MovementTable, counts: np.ndarray) -> np.ndarray:
    """Vehicles per movement ``[..., K]`` from lane counts ``[..., L]``."""
    counts = np.asarray(counts, dtype=np.float64)
    return _segment_sum(counts[..., table.vol_lane] * table.vol_weight, table.vol_movement, table.num_movements)


def action_movements(table: MovementTable, actions: np.ndarray) -> np.ndarray:
    """Green counts per movement ``[..., K]`` from joint actions ``[..., N]`` (phase indices)."""
    actions = np.asarray(actions)
    green = actions[..., table.act_agent] == table.act_action
    return _segment_sum(green, table.act_movement, table.num_movements)


def normalise(x: np.ndarray) -> np.ndarray:
    """``x / x.sum()`` along the last axis; ``nan`` where the sum is 0 (no distribution)."""
    x = np.asarray(x, dtype=np.float64)
    total = x.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, x / np.where(total > 0, total, 1.0), np.nan)


def kl_divergence(p: np.ndarray, q: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    r""":math:`\mathrm{KL}(\tilde p \Vert \tilde q)` along the last axis, with
    :math:`\tilde p = (p + \epsilon)/(1 + K\epsilon)` (``p``, ``q`` distributions; nan stays nan)."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    k = p.shape[-1]
    ps, qs = (p + epsilon) / (1 + k * epsilon), (q + epsilon) / (1 + k * epsilon)
    return (ps * (np.log(ps) - np.log(qs))).sum(-1)


def euclidean_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r""":math:`\lVert p - q \rVert_2` along the last axis."""
    return np.linalg.norm(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64), axis=-1)


# ------------------------------------------------------------------------------------------------
# rollouts and intervals


@dataclass
class Recording:
    """Per decision step (episodes one after the other): movement volumes and green counts."""

    volume: np.ndarray  # [T, K]
    green: np.ndarray  # [T, K]
    episode: np.ndarray  # [T]
    step: np.ndarray  # [T] decision index within its episode
    episodes: list[dict[str, float]]  # each episode's metrics


@torch.no_grad()
def record(
    env: Any, algo: Any, table: MovementTable, episodes: int, seed: int, deterministic: bool = False
) -> Recording:
    """Roll ``algo``'s policy out for ``episodes`` episodes (the evaluation episodes of run seed ``seed``,
    :func:`ipgnn.seeding.eval_seed`) on a traffic
    ``env`` (``make_env`` of a traffic config) with sampled actions, reading the lane counts of the state
    every decision is taken in from the env's engine."""
    raw = env.env
    counts, actions, ep_idx, steps, metrics = [], [], [], [], []
    for e in range(episodes):
        obs = env.reset(seed=eval_seed(seed, e))
        t = 0
        while True:
            counts.append(lane_counts(raw.engine, table))
            action = algo.act(obs, deterministic=deterministic).cpu()
            actions.append(action.numpy().astype(np.int64))
            ep_idx.append(e)
            steps.append(t)
            res = env.step(action)
            obs, t = res.obs, t + 1
            if res.done:
                metrics.append(dict(res.episode or {}))
                break
    c, a = np.stack(counts), np.stack(actions)
    return Recording(movement_volume(table, c), action_movements(table, a), np.array(ep_idx), np.array(steps), metrics)


def interval_rows(rec: Recording, interval: int, epsilon: float = EPSILON) -> list[dict[str, Any]]:
    """One row per interval of ``interval`` consecutive decisions (the last one may be shorter): its
    span, vehicle volume, ``kl`` and ``distance`` (see the module docstring)."""
    if interval < 1:
        raise ValueError(f"interval must be at least 1 decision step, got {interval}")
    t = rec.volume.shape[0]
    starts = np.arange(0, t, interval)
    vol = np.add.reduceat(rec.volume, starts, axis=0)
    grn = np.add.reduceat(rec.green, starts, axis=0)
    p, q = normalise(vol), normalise(grn)
    kl, dist = kl_divergence(p, q, epsilon), euclidean_distance(p, q)
    rows = []
    for k, s in enumerate(starts):
        e = min(s + interval, t) - 1
        rows.append(
            {
                "interval": k,
                "first_step": int(s),
                "last_step": int(e),
                "steps": int(e - s + 1),
                "first_episode": int(rec.episode[s]),
                "last_episode": int(rec.episode[e]),
                "vehicles": float(vol[k].sum()),
                "kl": float(kl[k]),
                "distance": float(dist[k]),
            }
        )
    return rows


def _nanmean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def plot_interpretation(
    rows: Sequence[dict[str, Any]], p: np.ndarray | None = None, q: np.ndarray | None = None, title: str = ""
) -> Any:
    """Fig. 7: KL divergence and Euclidean distance per interval (with their means), and, given the
    overall distributions ``p`` (volume) and ``q`` (actions), each movement's two shares."""
    import matplotlib

    if not _in_notebook():  # headless file output; a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["interval"] for r in rows]
    ncols = 3 if p is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4), constrained_layout=True)
    for ax, key, label, colour in (
        (axes[0], "kl", "KL(volume || action)", "C0"),
        (axes[1], "distance", "Euclidean distance ||volume - action||", "C1"),
    ):
        ys = [r[key] for r in rows]
        ax.plot(x, ys, "o-", color=colour, ms=3)
        mean = _nanmean(ys)
        if math.isfinite(mean):
            ax.axhline(mean, color=colour, ls="--", lw=1, label=f"mean {mean:.4f}")
            ax.legend(fontsize="small")
        ax.set_xlabel("interval")
        ax.set_ylabel(label)
        ax.set_title(f"{label} per interval")
        ax.set_ylim(bottom=0)
    if p is not None:
        ax = axes[2]
        ax.scatter(p, q, s=12, alpha=0.7)
        top = float(np.nanmax([np.nanmax(p), np.nanmax(q), 1e-9])) * 1.05
        ax.plot([0, top], [0, top], "k:", lw=1, label="equal shares")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("vehicle volume share of the movement")
        ax.set_ylabel("sampled action (green) share of the movement")
        ax.set_title("All intervals together, one dot per movement")
        ax.legend(fontsize="small")
    fig.suptitle(title or "Policy interpretation (app. C.3): vehicle volume vs sampled action distribution")
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython  # type: ignore

        return get_ipython() is not None
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------------
# the whole analysis


@dataclass
class Interpretation:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    csv_path: Path
    png_path: Path


def default_out_dir(checkpoint_path: str | Path) -> Path:
    """``<run>/interpretation`` for ``<run>/checkpoints/x.pt``, else ``interpretation`` beside the file."""
    path = Path(checkpoint_path)
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run / "interpretation"


def interpret(
    checkpoint_path: str | Path,
    episodes: int = 1,
    interval: int = 10,
    out: str | Path | None = None,
    seed: int | None = None,
    epsilon: float = EPSILON,
    include_always_green: bool = False,
    overrides: Sequence[str] | None = None,
    greedy: bool = False,
) -> Interpretation:
    """Load a traffic checkpoint, record ``episodes`` sampled episodes (``greedy``: the policy's greedy
    actions instead, the controller it deploys), and write the CSV and PNG.

    Raises:
        NotTrafficError: the checkpoint is not for ``env.task: traffic``.
        FileNotFoundError / ValueError: unreadable checkpoint or bad arguments.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be at least 1, got {episodes}")
    if interval < 1:
        raise ValueError(f"--interval must be at least 1 decision step, got {interval}")
    path, run = _load_traffic_run(checkpoint_path, overrides)
    cfg = run.cfg
    table, rec = _record_run(run, path, episodes, seed, include_always_green, greedy)
    rows = interval_rows(rec, interval, epsilon)
    p_all, q_all = normalise(rec.volume.sum(0)), normalise(rec.green.sum(0))
    out = Path(out) if out is not None else default_out_dir(path)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / CSV_NAME, out / PNG_NAME
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "checkpoint": str(path),
        "env_step": run.env_step,
        "episodes": episodes,
        "interval": interval,
        "decisions": int(rec.volume.shape[0]),
        "intervals": len(rows),
        "movements": table.num_movements,
        "epsilon": epsilon,
        "include_always_green": include_always_green,
        "actions": "greedy" if greedy else "sampled",
        "mean_kl": _nanmean([r["kl"] for r in rows]),
        "mean_distance": _nanmean([r["distance"] for r in rows]),
        "overall_kl": float(kl_divergence(p_all, q_all, epsilon)),
        "overall_distance": float(euclidean_distance(p_all, q_all)),
        "average_travel_time": _nanmean([m.get("average_travel_time", math.nan) for m in rec.episodes]),
        "csv": str(csv_path),
        "png": str(png_path),
    }
    title = f"Policy interpretation (app. C.3): {cfg.name}, {episodes} episode(s), {interval} decisions per interval"
    _save_figure(rows, p_all, q_all, title, png_path)
    return Interpretation(rows, summary, csv_path, png_path)


def _load_traffic_run(checkpoint_path: str | Path, overrides: Sequence[str] | None) -> tuple[Path, Run]:
    """The checkpoint's path and its loaded run; :class:`NotTrafficError` unless it was trained on traffic."""
    from ipgnn.runs import load_run, read_checkpoint

    saved = read_checkpoint(checkpoint_path)
    path, task = saved.path, saved.cfg.env.task
    if task != "traffic":
        raise NotTrafficError(
            f"checkpoint '{path}' was trained on task '{task}', not on traffic-signal control "
            "(env.task: traffic): policy interpretation (app. C.3) compares vehicle volumes with "
            "the phases the policy gives green, which only traffic tasks have"
        )
    return path, load_run(saved, overrides)


def _record_run(
    run: Run, path: Path, episodes: int, seed: int | None, include_always_green: bool, greedy: bool
) -> tuple[MovementTable, Recording]:
    """The run's movement table and ``episodes`` recorded episodes of ``seed`` (default: the run's), the
    action sampling seeded with it; the environment is closed afterwards."""
    from ipgnn.analysis import traffic_scenario

    cfg, env, algo = run
    try:
        scenario = traffic_scenario(env)
        if scenario is None:
            raise NotTrafficError(f"checkpoint '{path}': its environment has no traffic scenario")
        table = movement_table(scenario, include_always_green)
        seed = cfg.seed if seed is None else seed
        seed_everything(seed)  # the action sampling when not greedy
        rec = record(env, algo, table, episodes, seed, deterministic=greedy)
    finally:
        env.close()
    return table, rec


def _save_figure(rows: list[dict[str, Any]], p_all: np.ndarray, q_all: np.ndarray, title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = plot_interpretation(rows, p_all, q_all, title=title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# the paper's Euclidean distances on the 7x7 grid (app. C.3), for the comparison table
PAPER_DISTANCE = {"ipsac": 0.0271, "dgn": 0.0938, "pic": 0.0933}


def interpret_runs(
    root: str | Path,
    algos: Sequence[str],
    out: str | Path,
    episodes: int = 1,
    interval: int = 10,
    epsilon: float = EPSILON,
    include_always_green: bool = False,
    greedy: bool = False,
) -> list[dict[str, Any]]:
    """Fig. 7 across methods: :func:`interpret` on every run of ``algos`` under an ``ipgnn-compare`` results
    directory ``root`` (``<scenario>/<algo>/seed<k>/checkpoints/latest.pt``), each on its own seed's
    evaluation episodes, into ``out/<scenario>/<algo>/seed<k>/``; then ``out/summary.csv`` and
    ``out/summary.md`` (per scenario and method, mean ± std over seeds of the mean KL and distance per
    interval, of the overall ones, and of the ATT, beside the paper's distance) and ``out/interpretation.png``
    (the per-interval KL and distance, mean over seeds, one line per method). Returns the summary rows."""
    root, out = Path(root), Path(out)
    found = sorted(p for algo in algos for p in root.glob(f"*/{algo}/seed*/checkpoints/latest.pt"))
    if not found:
        raise FileNotFoundError(
            f"{root}: no checkpoints/latest.pt of {', '.join(algos)} below it (an ipgnn-compare "
            "results directory: <scenario>/<algo>/seed<k>/checkpoints/latest.pt)"
        )
    per: dict[tuple[str, str], list[Interpretation]] = {}
    for path in found:
        run = path.parent.parent
        scenario, algo = run.parent.parent.name, run.parent.name
        res = interpret(
            path,
            episodes,
            interval,
            out / scenario / algo / run.name,
            None,
            epsilon,
            include_always_green,
            greedy=greedy,
        )
        per.setdefault((scenario, algo), []).append(res)
    table = []
    keys = ("mean_kl", "mean_distance", "overall_kl", "overall_distance", "average_travel_time")
    for (scenario, algo), results in sorted(per.items(), key=lambda kv: (kv[0][0], list(algos).index(kv[0][1]))):
        row: dict[str, Any] = {
            "scenario": scenario,
            "algo": algo,
            "seeds": len(results),
            "episodes": episodes,
            "interval": interval,
            "paper_distance": PAPER_DISTANCE.get(algo, math.nan),
        }
        for k in keys:
            xs = np.array([r.summary[k] for r in results], dtype=float)
            row[f"{k}/mean"], row[f"{k}/std"] = float(np.nanmean(xs)), float(np.nanstd(xs))
        table.append(row)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    fmt = lambda r, k, d=4: f"{r[k + '/mean']:.{d}f} ± {r[k + '/std']:.{d}f}"
    lines = [
        f"Policy interpretation (app. C.3, Fig. 7): {episodes} {'greedy' if greedy else 'sampled'} episode(s) "
        f"per run on its seed's evaluation episodes, {interval} decisions per interval; mean ± std over seeds.",
        "",
        "| scenario | method | seeds | KL per interval | distance per interval | overall KL | overall distance "
        "| ATT (s) | paper's distance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        paper = "-" if math.isnan(r["paper_distance"]) else f"{r['paper_distance']:.4f}"
        lines.append(
            f"| {r['scenario']} | {r['algo']} | {r['seeds']} | {fmt(r, 'mean_kl')} | {fmt(r, 'mean_distance')} "
            f"| {fmt(r, 'overall_kl')} | {fmt(r, 'overall_distance')} | {fmt(r, 'average_travel_time', 1)} "
            f"| {paper} |"
        )
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    _plot_methods(per, out / "interpretation.png", episodes, interval, "greedy" if greedy else "sampled")
    return table


def _plot_methods(
    per: dict[tuple[str, str], list[Interpretation]], path: Path, episodes: int, interval: int, actions: str = "sampled"
) -> None:
    """KL and distance per interval, mean ± std over seeds, one line per (scenario, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for (scenario, algo), results in per.items():
        label = f"{algo} ({len(results)} seeds)" + (f", {scenario}" if len({s for s, _ in per}) > 1 else "")
        for ax, key in zip(axes, ("kl", "distance")):
            ys = np.array([[r[key] for r in res.rows] for res in results], dtype=float)
            mean, std = np.nanmean(ys, 0), np.nanstd(ys, 0)
            (line,) = ax.plot(np.arange(len(mean)), mean, "o-", ms=3, label=label)
            ax.fill_between(np.arange(len(mean)), mean - std, mean + std, color=line.get_color(), alpha=0.2)
    for ax, label in zip(axes, ("KL(volume || action)", "Euclidean distance ||volume - action||")):
        ax.set_xlabel(f"interval ({interval} decisions)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"Policy interpretation (app. C.3, Fig. 7): {episodes} {actions} episode(s) per seed")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipgnn-interpret",
        description="Policy interpretation (app. C.3, Fig. 7) of a trained traffic-signal policy: KL divergence and "
        "Euclidean distance between the vehicle volume distribution over movements and the sampled "
        "action distribution, per interval of decision steps. Writes a CSV and a PNG, prints the means.",
        epilog="example: ipgnn-interpret --checkpoint runs/grid7x7-<time>/checkpoints/latest.pt --episodes 5 "
        "--interval 20",
    )
    parser.add_argument("--checkpoint", help="a checkpoint .pt of a traffic run (or its run directory)")
    parser.add_argument(
        "--runs",
        metavar="DIR",
        help="instead of --checkpoint: every run of --algos under an "
        "ipgnn-compare results directory, summarised per method over seeds into --out",
    )
    parser.add_argument(
        "--algos", default="ipsac,dgn,pic", help="with --runs: the methods (default ipsac,dgn,pic, Fig. 7's)"
    )
    parser.add_argument("--episodes", type=int, default=1, help="episodes to roll out with sampled actions (default 1)")
    parser.add_argument("--interval", type=int, default=10, help="decision steps per interval (default 10)")
    parser.add_argument("--out", help="output directory (default: <run>/interpretation)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="play the evaluation episodes of this run seed, and seed the action sampling with it (default: the run's)",
    )
    parser.add_argument(
        "--epsilon",
        type=float,
        default=EPSILON,
        help=f"smoothing of both distributions inside the KL divergence (default {EPSILON:g})",
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="the policy's greedy actions instead of sampled ones (the paper samples: a ~ q_i)",
    )
    parser.add_argument(
        "--include-always-green",
        action="store_true",
        help="keep movements that every phase gives green (unsignalised right turns)",
    )
    return parser


def _check_arguments(args: argparse.Namespace) -> None:
    """The counts, the seed, the smoothing and ``--out`` in range before any checkpoint is read (``ValueError``,
    one line naming the option)."""
    from ipgnn.cli import MAX_EPISODES, check_count, check_output
    from ipgnn.seeding import MAX_SEED

    check_count("--episodes", args.episodes, 1, MAX_EPISODES)
    if args.seed is not None:
        check_count("--seed", args.seed, 0, MAX_SEED, " (2**63 - 1)")
    if not (math.isfinite(args.epsilon) and args.epsilon >= 0):
        raise ValueError(f"--epsilon must be a finite number >= 0 (default {EPSILON:g}), got {args.epsilon}")
    if args.out is not None:
        check_output(args.out, "--out", directory=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``ipgnn-interpret``: app. C.3 policy interpretation of a traffic checkpoint."""
    parser = _parser()
    args = parser.parse_args(argv)
    from ipgnn.config import ConfigError

    if bool(args.checkpoint) == bool(args.runs):
        parser.error("pass one of --checkpoint FILE (one run) or --runs DIR --out OUT (a comparison's runs)")
    if args.runs and not args.out:
        parser.error("--runs needs --out DIR for the summary")
    try:
        _check_arguments(args)
        if args.runs:
            table = interpret_runs(
                args.runs,
                [a.strip() for a in args.algos.split(",") if a.strip()],
                args.out,
                args.episodes,
                args.interval,
                args.epsilon,
                args.include_always_green,
                args.greedy,
            )
            print(Path(args.out, "summary.md").read_text())
            print(f"wrote {args.out}/summary.md, summary.csv and interpretation.png ({len(table)} method rows)")
            return 0
        res = interpret(
            args.checkpoint,
            args.episodes,
            args.interval,
            args.out,
            args.seed,
            args.epsilon,
            args.include_always_green,
            greedy=args.greedy,
        )
    except (NotTrafficError, ConfigError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(res.summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
