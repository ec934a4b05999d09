"""``ipgnn-compare``: a grid of (scenario × algorithm × variant × seed) runs, and its summary.

::

    # IP against two baselines on one task, 5 seeds (sec. 5.2), 2 runs at a time
    ipgnn-compare --config configs/mpe_spread30.yaml --algos ipsac,dgn,qmix --seeds 0-4 \\
        --out results/spread30 --workers 2
    # a W&B sweep file run locally as a grid (every combination of its parameter values)
    ipgnn-compare --config configs/mpe_spread30.yaml --sweep configs/sweeps/knn_k.yaml --seeds 0-2 \\
        --out results/k_ablation
    # summarise again (or from W&B: --from-wandb ENTITY/PROJECT --group GROUP)
    ipgnn-compare --summarize results/spread30

Each run is an ordinary ``ipgnn-train`` process (so a simulator that allows one instance per
process is fine, and a crash stays in its run) with its directory at
``<out>/<scenario>/<algo>[/<variant>]/seed<k>``. A run whose ``result.json`` exists is complete and
skipped; a run with a checkpoint but no result is resumed; other arguments after the known flags are
overrides passed to every run (``--train.total_steps=20000``).

Summary (``<out>/summary.csv``, ``<out>/summary.md``): per (scenario, algorithm, variant), over seeds,
the mean ± standard deviation of

- ``final``: the run's last evaluation (``eval/<metric>`` of its last evaluation row);
- ``best``: the best evaluation over the run (max for returns; for ``average_travel_time``,
  ``queue_length``, ``delay`` and ``landmark_distance`` the min);

and ``<out>/curves_<scenario>.png``: evaluation return against environment steps, one line per
(algorithm, variant): the mean over seeds with a shaded ± std band, as the paper's figures.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ipgnn.config import ConfigError, ExperimentConfig, clip, load_config
from ipgnn.cpu import thread_env, usable_cores
from ipgnn.logger import read_metrics

LOWER_IS_BETTER = ("average_travel_time", "queue_length", "delay", "landmark_distance", "collisions")


@dataclass
class RunSpec:
    scenario: str  # the config's stem
    configs: list[str]
    algo: str
    seed: int
    variant: dict[str, Any] = field(default_factory=dict)  # sweep parameters of this run
    overrides: list[str] = field(default_factory=list)

    @property
    def variant_name(self) -> str:
        return ",".join(f"{k.split('.')[-1]}={v}" for k, v in self.variant.items())

    def run_dir(self, out: Path) -> Path:
        parts = [self.scenario, self.algo] + ([self.variant_name] if self.variant else []) + [f"seed{self.seed}"]
        return out.joinpath(*parts)

    def config_overrides(self) -> list[str]:
        """What this run sets on top of its config files: seed, algorithm, sweep values, user overrides."""
        args = [f"--seed={self.seed}", f"--algo.name={self.algo}"]
        args += [f"--{k}={_fmt(v)}" for k, v in self.variant.items()]
        return args + list(self.overrides)

    def argv(self, out: Path) -> list[str]:
        args = [a for c in self.configs for a in ("--config", c)]
        return args + ["--run-dir", str(self.run_dir(out)), *self.config_overrides()]


def _fmt(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict, bool)) or v is None else str(v)


MAX_SEEDS = 1000  #: the most seeds one --seeds may name (each is a training run)


def parse_seeds(text: str) -> list[int]:
    """``0-4`` or ``0,1,2`` (or a mix: ``0-2,7``): at most :data:`MAX_SEEDS` seeds, each from 0 to
    :data:`ipgnn.seeding.MAX_SEED`, counted before a range is expanded."""
    from ipgnn.seeding import MAX_SEED

    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            lo, hi = part.split("-", 1) if "-" in part[1:] else (part, part)
            lo, hi = (int(lo), int(hi)) if part else (0, -1)
        except ValueError:
            raise ConfigError(
                f"--seeds: '{clip(part, 60)}' is not a seed or a range of seeds (use e.g. 0-4 or 0,1,2)"
            ) from None
        if part and hi < lo:
            raise ConfigError(f"--seeds: the range '{clip(part, 60)}' is empty (write the lower seed first, e.g. 0-4)")
        if lo < 0 or hi > MAX_SEED:
            raise ConfigError(f"--seeds: seeds are integers from 0 to {MAX_SEED} (2**63 - 1), got {clip(text, 60)!r}")
        if len(seeds) + hi - lo + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds: at most {MAX_SEEDS} seeds (runs) at once, got more in {clip(text, 60)!r}")
        seeds += range(lo, hi + 1)
    if not seeds:
        raise ConfigError(f"--seeds: no seed in '{clip(text, 60)}' (use e.g. 0-4 or 0,1,2)")
    return seeds


def sweep_grid(path: str | Path) -> list[dict[str, Any]]:
    """Every combination of a W&B sweep file's ``parameters`` values (``values`` lists and single
    ``value`` entries; distributions cannot be run as a grid and are refused)."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the sweep file ({exc})") from None
    params = spec.get("parameters")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{path}: a sweep file needs a 'parameters' mapping")
    names, choices = [], []
    for name, p in params.items():
        if not isinstance(p, dict) or not ("values" in p or "value" in p):
            raise ConfigError(
                f"{path}: parameters.{name}: only 'values' lists or a single 'value' can run as a "
                f"local grid (got {p!r})"
            )
        names.append(name)
        choices.append(list(p["values"]) if "values" in p else [p["value"]])
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def grid_axes(grid: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], list[str], list[str]]:
    """Split a sweep grid into its axes: ``(variants, seeds, algos, fixed)``. Seeds (``seed``) and methods
    (``algo.name``) are the runner's own axes, so a run's directory stays ``<algo>/<variant>/seed<k>``; a
    parameter with one value in every run is a setting (``fixed``, as overrides), not a variant."""
    variants = [dict(v) for v in grid] or [{}]
    seeds = sorted({v.pop("seed") for v in variants if "seed" in v})
    algos = list(dict.fromkeys(v.pop("algo.name") for v in variants if "algo.name" in v))
    first = variants[0]
    fixed = {k: first[k] for k in first if all(k in v and v[k] == first[k] for v in variants)}
    variants = [{k: x for k, x in v.items() if k not in fixed} for v in variants]
    variants = [dict(t) for t in dict.fromkeys(tuple(v.items()) for v in variants)]
    return variants, seeds, algos, [f"--{k}={_fmt(x)}" for k, x in fixed.items()]


def sweep_configs(path: str | Path) -> list[str]:
    """The ``--config`` files named in a sweep file's ``command`` (so ``--sweep`` alone is enough)."""
    spec = yaml.safe_load(Path(path).read_text()) or {}
    cmd = [str(c) for c in spec.get("command", [])]
    return [cmd[i + 1] for i, c in enumerate(cmd[:-1]) if c == "--config"]


def plan(
    configs: Sequence[str],
    algos: Sequence[str],
    seeds: Sequence[int],
    variants: Sequence[dict[str, Any]],
    overrides: Sequence[str],
    extra_configs: Sequence[str] = (),
    tuned: dict[str, dict[str, Any]] | None = None,
) -> list[RunSpec]:
    """The grid, checked before anything runs: every combination must load as a valid config. ``tuned``
    (:func:`read_tuned`) gives each method its own settings, applied before ``overrides``."""
    runs = []
    for cfg_path in configs:
        for algo, variant, seed in itertools.product(algos, variants or [{}], seeds):
            own = [f"--{k}={_fmt(v)}" for k, v in ((tuned or {}).get(algo) or {}).items()]
            run = RunSpec(
                Path(cfg_path).stem, [str(cfg_path), *extra_configs], algo, seed, dict(variant), own + list(overrides)
            )
            load_config(run.configs, run.config_overrides())  # a ConfigError names the file and key
            runs.append(run)
    return runs


def select_best(out: Path, tail: int = 3) -> dict[str, dict[str, Any]]:
    """The tuning rule: for each method of a tuning campaign under ``out`` (one scenario; variants are the
    grid's settings, e.g. ``algo.lr``), the variant whose mean over seeds of its last ``tail`` evaluations of
    the headline metric (traffic: ATT, lowest; otherwise the return, highest) is best. The mean of the last
    three evaluations, not the last one alone, so that one lucky evaluation episode does not pick the setting.
    Writes ``out/tuned.yaml`` (``{method: {key: value}}``, with every variant's score in a comment) and
    returns the mapping."""
    from ipgnn.envs import headline_of

    found = _runs_on_disk(out)
    scenarios = {spec.get("scenario") for spec, _ in found}
    if not found:
        raise ConfigError(f"{out}: no completed run (no result.json below it)")
    if len(scenarios) > 1:
        raise ConfigError(
            f"{out}: runs of several scenarios ({', '.join(sorted(map(str, scenarios)))}); a tuning "
            "campaign selects on one"
        )
    head = headline_of([r for _, rows in found for r in rows])
    key, lower = (
        ("eval/episode_return", False) if head is None else (f"eval/{head.metric}", head.metric in LOWER_IS_BETTER)
    )
    scores: dict[str, dict[tuple, list[float]]] = {}
    for spec, rows in found:
        evals = [r[key] for r in rows if key in r][-tail:]
        if evals:
            variant = tuple(sorted(spec.get("variant", {}).items()))
            scores.setdefault(spec["algo"], {}).setdefault(variant, []).append(sum(evals) / len(evals))
    best: dict[str, dict[str, Any]] = {}
    lines = [
        f"# Selected by ipgnn-compare --select-best {out}: per method, the setting with the best mean of the last "
        f"{tail} evaluations of {key} ({'lowest' if lower else 'highest'}), mean over seeds.",
        "# Scores:",
    ]
    for algo, by_variant in sorted(scores.items()):
        mean = {v: sum(xs) / len(xs) for v, xs in by_variant.items()}
        pick = (min if lower else max)(mean, key=mean.__getitem__)
        best[algo] = dict(pick)
        lines.append(
            f"#   {algo}: "
            + ", ".join(f"{','.join(f'{k}={x}' for k, x in v) or '-'} {s:.4g}" for v, s in sorted(mean.items()))
        )
    (out / "tuned.yaml").write_text("\n".join(lines) + "\n" + yaml.safe_dump(best, sort_keys=True))
    return best


def read_tuned(path: str | Path) -> dict[str, dict[str, Any]]:
    """A ``tuned.yaml`` of :func:`select_best`: ``{method: {dotted key: value}}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the tuned settings ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{path}: expected a mapping of method -> {{dotted key: value}} (as --select-best writes)")
    return data


def _earlier_wall(run_dir: Path) -> float:
    """Wall-clock seconds of a run's earlier, unfinished attempts (``wall.json``), 0 for a fresh run."""
    path = run_dir / "wall.json"
    return float(json.loads(path.read_text())["wall_s"]) if path.is_file() else 0.0


def execute(runs: Sequence[RunSpec], out: Path, workers: int = 1, echo=print) -> list[tuple[RunSpec, int]]:
    """Run every incomplete run (resuming those with a checkpoint); ``workers`` at a time."""
    todo = [r for r in runs if not (r.run_dir(out) / "result.json").is_file()]
    echo(f"{len(runs)} runs, {len(runs) - len(todo)} already complete, {len(todo)} to run with {workers} worker(s)")

    def one(run: RunSpec) -> tuple[RunSpec, int]:
        rd = run.run_dir(out)
        rd.mkdir(parents=True, exist_ok=True)
        if (rd / "checkpoints" / "latest.pt").is_file():
            argv = ["--resume", str(rd)]
        else:
            argv = run.argv(out)
        cmd = [sys.executable, "-m", "ipgnn.cli_entry", "train", *argv, "--logger.progress=false"]
        # runs side by side share the cores: more threads than cores makes every torch op wait
        # (measured here: one update 18x slower with 2 threads each on 2 busy cores)
        share = workers > 1 and "OMP_NUM_THREADS" not in os.environ
        env = thread_env(max(1, usable_cores() // workers) if share else 0)
        started = time.monotonic()
        with open(rd / "stdout.log", "ab") as so, open(rd / "stderr.log", "ab") as se:
            rc = subprocess.run(cmd, stdout=so, stderr=se, env=env).returncode
        wall_s = time.monotonic() - started  # this attempt's wall-clock time (a resumed run adds its earlier ones)
        if rc == 0:  # ipgnn-train ends its stdout with a JSON object of the final evaluation
            text = (rd / "stdout.log").read_text()
            start = text.rfind("\n{") + 1 if "\n{" in text else (0 if text.startswith("{") else -1)
            try:
                result = json.loads(text[start:]) if start >= 0 else {}
            except ValueError:
                result = {}
            tmp = rd / "result.json.tmp"
            tmp.write_text(
                json.dumps({"spec": run.__dict__, "wall_s": round(_earlier_wall(rd) + wall_s, 1), **result}, indent=2)
            )
            os.replace(tmp, rd / "result.json")
        if rc != 0:  # keep the time an interrupted or failed attempt took, for the run's total
            (rd / "wall.json").write_text(json.dumps({"wall_s": round(_earlier_wall(rd) + wall_s, 1)}))
        echo(f"[{'ok' if rc == 0 else f'FAILED rc={rc}, see {rd}/stderr.log'}] {rd}")
        return run, rc

    if workers <= 1:
        return [one(r) for r in todo]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads wait on processes: no GIL contention
        return list(pool.map(one, todo))


# --------------------------------------------------------------------------------------------------
def _engine_of(cfg: dict[str, Any]) -> str | None:
    """The simulator a run's resolved config names (traffic's ``env.options.engine``), if any."""
    env = cfg.get("env") or {}
    return (env.get("options") or {}).get("engine") if env.get("task") == "traffic" else None


def _runs_on_disk(out: Path) -> list[tuple[dict[str, Any], list[dict[str, float]]]]:
    found = []
    for res in sorted(out.rglob("result.json")):
        spec = json.loads(res.read_text()).get("spec", {})
        metrics = res.parent / "metrics.jsonl"
        cfg_path = res.parent / "config.yaml"
        if cfg_path.is_file():
            spec = spec | {"engine": _engine_of(yaml.safe_load(cfg_path.read_text()) or {})}
        if metrics.is_file():
            found.append((spec, read_metrics(metrics)))
    return found


def _engines_by_scenario(runs: Iterable[tuple[dict[str, Any], Any]]) -> dict[str, set[str]]:
    """The traffic engines each scenario's runs used (runs whose resolved config names one)."""
    engines: dict[str, set[str]] = {}
    for spec, _ in runs:
        if spec.get("engine"):
            engines.setdefault(spec.get("scenario", "?"), set()).add(str(spec["engine"]))
    return engines


def _separate_engines(
    runs: list[tuple[dict[str, Any], list[dict[str, float]]]],
) -> tuple[list[tuple[dict[str, Any], list[dict[str, float]]]], list[str]]:
    """Never average runs of one scenario on different simulators: where a scenario's runs used more than
    one engine, each engine's runs become their own scenario ``<scenario>-<engine>``, and a note says so.
    Returns the runs and the notes (one line per engine used, and the warning)."""
    engines = _engines_by_scenario(runs)
    notes = [f"Engine: {scenario} ran on {', '.join(sorted(e))}." for scenario, e in sorted(engines.items())]
    mixed = {s for s, e in engines.items() if len(e) > 1}
    if mixed:
        notes.append(
            f"WARNING: {', '.join(sorted(mixed))} ran on more than one engine; their rewards and metrics are not "
            "comparable across engines, so each engine's runs are summarised separately as "
            "'<scenario>-<engine>'."
        )
        runs = [
            (
                (spec | {"scenario": f"{spec.get('scenario', '?')}-{spec['engine']}"})
                if spec.get("scenario") in mixed and spec.get("engine")
                else spec,
                rows,
            )
            for spec, rows in runs
        ]
    return runs, notes


def _group_key(spec: dict[str, Any]) -> tuple[str, str, str]:
    variant = ",".join(f"{k.split('.')[-1]}={v}" for k, v in spec.get("variant", {}).items())
    return spec.get("scenario", "?"), spec.get("algo", "?"), variant


def mean_std(xs: Sequence[float], ddof: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over seeds: the ``mean ± std`` of every table here, population (``ddof``
    0) unless asked; with ``ddof`` 1 (the sample std, as the BenchMARL race reports) one value has std 0."""
    m = sum(xs) / len(xs)
    n = len(xs) - ddof
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / n) if n > 0 else 0.0)


def seed_band(curves: Sequence[Sequence[tuple[float, float]]], upto: float | None = None):
    """Mean and std over seeds of ``(x, y)`` curves sampled at different ``x``: each curve is linearly
    interpolated onto the union of their ``x`` (only ``x <= upto`` when given, e.g. the episodes every seed
    reached). Returns ``(grid, mean, std)`` as NumPy arrays; the band every curve figure here draws."""
    import numpy as np

    xs = np.unique(np.concatenate([[x for x, _ in c] for c in curves]))
    grid = xs if upto is None else xs[xs <= upto]
    ys = np.stack([np.interp(grid, [x for x, _ in c], [y for _, y in c]) for c in curves])
    return grid, ys.mean(0), ys.std(0)


def summarize(runs: Iterable[tuple[dict[str, Any], list[dict[str, float]]]], out: Path) -> list[dict[str, Any]]:
    """Write ``summary.csv``, ``summary.md`` and ``curves_<scenario>.png`` from runs' metric rows (runs of one
    scenario on different traffic engines are kept apart, with a warning: :func:`_separate_engines`)."""
    runs, notes = _separate_engines(list(runs))
    for note in notes:
        if note.startswith("WARNING"):
            print(note, file=sys.stderr)
    groups: dict[tuple[str, str, str], list[list[dict[str, float]]]] = {}
    seeds_of: dict[tuple[str, str, str], list[Any]] = {}
    for spec, rows in runs:
        groups.setdefault(_group_key(spec), []).append(rows)
        seeds_of.setdefault(_group_key(spec), []).append(spec.get("seed"))
    table = []
    for (scenario, algo, variant), seeds in sorted(groups.items()):
        evals = [[r for r in rows if "eval/episode_return" in r] for rows in seeds]
        evals = [e for e in evals if e]
        if not evals:
            continue
        metrics = sorted({k for e in evals for r in e for k in r if k.startswith("eval/")})
        row: dict[str, Any] = {"scenario": scenario, "algo": algo, "variant": variant, "seeds": len(evals)}
        for m in metrics:
            name = m.split("/", 1)[1]
            pick = min if name in LOWER_IS_BETTER else max
            final = [e[-1][m] for e in evals if m in e[-1]]
            best = [pick(r[m] for r in e if m in r) for e in evals if any(m in r for r in e)]
            for label, xs in (("final", final), ("best", best)):
                if xs:
                    row[f"{label}/{name}/mean"], row[f"{label}/{name}/std"] = mean_std(xs)
        table.append(row)
    refs = _reference_rows(groups, seeds_of)
    table += refs
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(table, out, notes)
    engines = _engines_by_scenario(runs)
    for scenario in sorted({k[0] for k in groups}):
        _plot(
            scenario,
            {k: v for k, v in groups.items() if k[0] == scenario},
            out / f"curves_{scenario}.png",
            [r for r in refs if r["scenario"] == scenario],
            ", ".join(sorted(engines.get(scenario, ()))),
        )
        axis = _one_axis([spec for spec, _ in runs if spec.get("scenario") == scenario])
        if axis is not None:
            _plot_against(
                scenario,
                axis,
                [(s, r) for s, r in runs if s.get("scenario") == scenario],
                out / f"against_{axis.split('.')[-1]}_{scenario}.png",
                [r for r in refs if r["scenario"] == scenario],
                ", ".join(sorted(engines.get(scenario, ()))),
            )
    return table


def _one_axis(specs: Sequence[dict[str, Any]]) -> str | None:
    """The sweep parameter of an ablation: the one ``variant`` key whose value differs between a scenario's
    runs (``env.graph.k`` of a k sweep), or None when no key or several keys vary."""
    values: dict[str, set[str]] = {}
    for spec in specs:
        for k, v in (spec.get("variant") or {}).items():
            values.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    varying = [k for k, vs in values.items() if len(vs) > 1]
    return varying[0] if len(varying) == 1 else None


def ablation_finals(
    runs: Iterable[tuple[dict[str, Any], list[dict[str, float]]]], axis: str
) -> dict[str, dict[Any, list[float]]]:
    """Each method's final evaluation of the headline metric (the ATT on traffic, else the return), per
    value of the swept parameter ``axis``, one entry per seed: ``{algo: {value: [final, ...]}}``."""
    from ipgnn.envs import headline_of

    runs = list(runs)
    head = headline_of([r for _, rows in runs for r in rows])
    key = "eval/episode_return" if head is None else f"eval/{head.metric}"
    finals: dict[str, dict[Any, list[float]]] = {}
    for spec, rows in runs:
        evals = [r[key] for r in rows if key in r]
        if evals and axis in (spec.get("variant") or {}):
            finals.setdefault(spec.get("algo", "?"), {}).setdefault(spec["variant"][axis], []).append(evals[-1])
    return finals


def _reference_lines(ax: Any, refs: Sequence[dict[str, Any]], head: Any, sign: float) -> None:
    """Each reference controller of ``refs`` (rows of :func:`_reference_rows`) as a dashed line at its mean over
    seeds of the headline metric ``head``, under the paper's ``sign`` (no lines for a task without a headline)."""
    if head is None:
        return
    lines = [r for r in refs if f"final/{head.metric}/mean" in r]
    for k, r in enumerate(sorted(lines, key=lambda r: r["algo"])):
        mean = sign * r[f"final/{head.metric}/mean"]
        name = r["algo"].replace(" (reference)", "")
        ax.axhline(
            mean,
            ls="--",
            lw=1.2,
            color=("black", "dimgray", "darkgray")[k % 3],
            label=f"{name} {mean:.1f} ({r['seeds']} seeds)",
        )


def _plot_against(
    scenario: str,
    axis: str,
    runs: Sequence[tuple[dict[str, Any], list[dict[str, float]]]],
    path: Path,
    refs: Sequence[dict[str, Any]] = (),
    engine: str = "",
) -> None:
    """An ablation's figure (Fig. 6): each method's final evaluation (the paper's value: the return, or
    minus the ATT on traffic) against the swept parameter ``axis``, mean ± std over seeds as a line and
    band (numeric values) or as points with error bars (categories, e.g. ``env.graph.kind``); traffic's
    reference controllers as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ipgnn.envs import headline_of

    head = headline_of([r for _, rows in runs for r in rows])
    sign = 1.0 if head is None else head.paper_sign
    finals = ablation_finals(runs, axis)
    values = sorted({v for per in finals.values() for v in per}, key=lambda v: (isinstance(v, str), v))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for algo, per in sorted(finals.items()):
        xs = [v for v in values if v in per]
        stats = np.array([mean_std([sign * x for x in per[v]]) for v in xs])
        seeds = sorted({len(per[v]) for v in xs})
        label = f"{algo} ({'/'.join(map(str, seeds))} seeds)"
        if numeric:
            (line,) = ax.plot(xs, stats[:, 0], marker="o", label=label)
            ax.fill_between(xs, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=line.get_color(), alpha=0.2)
        else:
            ax.errorbar(
                [values.index(v) for v in xs],
                stats[:, 0],
                yerr=stats[:, 1],
                marker="o",
                ls="none",
                capsize=4,
                label=label,
            )
    if not numeric:
        ax.set_xticks(range(len(values)), [str(v) for v in values])
    else:
        ax.set_xticks(values)
    _reference_lines(ax, refs, head, sign)
    ax.set_xlabel(axis)
    ax.set_ylabel(
        "final average episode reward (eval)"
        if head is None
        else f"final {'-' if sign < 0 else ''}{head.label} (eval, {head.unit})"
    )
    ax.set_title(scenario + (f" ({engine})" if engine else "") + f": final evaluation against {axis}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reference_rows(
    groups: dict[tuple[str, str, str], list[list[dict[str, float]]]],
    seeds_of: dict[tuple[str, str, str], list[Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per scenario and reference controller (traffic: FixedTime, MaxPressure), mean ± std over
    the seeds' evaluation episodes, from the ``reference/*`` rows every run logged at step 0: the same
    engine, episode length and evaluation seeds as the learned policies in the table.

    A reference controller's evaluation depends on the seed alone (its episodes are the seed's evaluation
    stream), so every seed counts once however many methods ran it: seven methods on one seed give one
    sample, not seven (``seeds_of`` gives each run's seed; runs without one count separately)."""
    from ipgnn.references import from_rows

    per: dict[tuple[str, str], dict[Any, dict[str, float]]] = {}
    for key, seeds in groups.items():
        scenario = key[0]
        for k, rows in enumerate(seeds):
            seed = (seeds_of or {}).get(key, [None] * len(seeds))[k]
            for name, metrics in from_rows(rows).items():
                per.setdefault((scenario, name), {}).setdefault(
                    ("seed", seed) if seed is not None else ("run", key, k), metrics
                )
    out = []
    for (scenario, name), by_seed in sorted(per.items()):
        runs = list(by_seed.values())
        row: dict[str, Any] = {"scenario": scenario, "algo": f"{name} (reference)", "variant": "", "seeds": len(runs)}
        for m in sorted({k for r in runs for k in r}):
            xs = [r[m] for r in runs if m in r]
            for label in ("final", "best"):
                row[f"{label}/{m}/mean"], row[f"{label}/{m}/std"] = mean_std(xs)
        out.append(row)
    return out


def _write_tables(table: list[dict[str, Any]], out: Path, notes: Sequence[str] = ()) -> None:
    cols = ["scenario", "algo", "variant", "seeds"] + sorted(
        {k for r in table for k in r} - {"scenario", "algo", "variant", "seeds"}
    )
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(table)
    shown = [
        m
        for m in ("average_travel_time", "episode_return", "landmark_distance")
        if any(f"final/{m}/mean" in r for r in table)
    ]
    head = ["scenario", "algorithm", "variant", "seeds"]
    for m in shown:
        head += [f"final {m}", f"best {m}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["scenario"], r["algo"], r["variant"] or "-", str(r["seeds"])]
        for m in shown:
            for label in ("final", "best"):
                mean = r.get(f"{label}/{m}/mean")
                cells.append("-" if mean is None else f"{mean:.4g} ± {r[f'{label}/{m}/std']:.2g}")
        lines.append("| " + " | ".join(cells) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in notes))


def _plot(
    scenario: str,
    groups: dict[tuple[str, str, str], list[list[dict[str, float]]]],
    path: Path,
    refs: Sequence[dict[str, Any]] = (),
    engine: str = "",
) -> None:
    """Evaluation curves (mean ± std band over seeds, one line per method and variant), and each reference
    controller of ``refs`` (rows of :func:`_reference_rows`) as a dashed line at its mean over seeds. The title
    names the scenario, the engine (traffic) and the evaluation episodes' length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ipgnn.envs import headline_of

    every = [r for seeds in groups.values() for rows in seeds for r in rows]
    head = headline_of(every)
    # the paper's y-axis: "average episode reward", which for traffic is minus the average travel time
    key, sign = ("eval/episode_return", 1.0) if head is None else (f"eval/{head.metric}", head.paper_sign)
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for (_, algo, variant), seeds in sorted(groups.items()):
        curves = [[(r["env_step"], sign * r[key]) for r in rows if key in r] for rows in seeds]
        curves = [c for c in curves if c]
        if not curves:
            continue
        grid, mean, std = seed_band(curves)
        label = algo + (f" [{variant}]" if variant else "") + f" ({len(curves)} seeds)"
        (line,) = ax.plot(grid, mean, label=label)
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    _reference_lines(ax, refs, head, sign)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(
        "average episode reward (eval)"
        if head is None
        else f"average episode reward = {'-' if sign < 0 else ''}{head.label} (eval, {head.unit})"
    )
    lengths = sorted({int(r["eval/episode_length"]) for r in every if "eval/episode_length" in r})
    detail = [engine] if engine else []
    if lengths:
        detail.append(f"{'/'.join(map(str, lengths))}-step evaluation episodes")
    ax.set_title(scenario + (f" ({', '.join(detail)})" if detail else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def wandb_runs(path: str, group: str | None = None) -> list[tuple[dict[str, Any], list[dict[str, float]]]]:
    """Runs of a W&B project (``ENTITY/PROJECT``) as (spec, metric rows), for :func:`summarize`."""
    import wandb

    filters = {"group": group} if group else {}
    found = []
    for run in wandb.Api().runs(path, filters=filters):
        cfg = run.config or {}
        spec = {
            "scenario": cfg.get("name", run.group or "?"),
            "algo": cfg.get("algo", {}).get("name", "ipsac"),
            "seed": cfg.get("seed", 0),
            "variant": {},
            "engine": _engine_of(cfg),
        }
        rows = [
            {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for r in run.scan_history()
        ]
        found.append((spec, [r for r in rows if "env_step" in r]))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipgnn-compare", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", action="append", default=[], help="experiment file(s): one scenario each")
    parser.add_argument(
        "--algo-config",
        action="append",
        default=[],
        help="file(s) layered on every run, after the config (each --algos X already applies its own "
        "method file, configs/algos/X.yaml)",
    )
    parser.add_argument(
        "--algos", help="comma-separated algo.name values (default: a sweep's algo.name values, else ipsac)"
    )
    parser.add_argument(
        "--seeds", help="e.g. 0-4 or 0,3,7 (default: a sweep's seed values, else 0-4, the paper's 5 seeds)"
    )
    parser.add_argument("--sweep", help="a W&B sweep file whose parameter values form a local grid")
    parser.add_argument("--out", help="results directory")
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (processes)")
    parser.add_argument("--summarize", metavar="OUT", help="only summarise the runs under OUT")
    parser.add_argument(
        "--select-best",
        metavar="OUT",
        help="write OUT/tuned.yaml: each method's best setting in the tuning campaign under OUT",
    )
    parser.add_argument(
        "--tuned",
        metavar="FILE",
        help="a tuned.yaml of --select-best: each method runs with its own selected settings (before the overrides)",
    )
    parser.add_argument("--from-wandb", metavar="ENTITY/PROJECT", help="summarise a W&B project's runs into --out")
    parser.add_argument("--group", help="with --from-wandb: only this run group")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan and check the grid (every run's config loads), print it, run nothing",
    )
    return parser


def _unrecognised(overrides: Sequence[str]) -> list[str]:
    """The extra arguments that are not config overrides (``--section.key=value`` or ``--top_key=value``)."""
    top = set(ExperimentConfig.model_fields) - {"env", "model", "algo", "replay", "train", "rollout", "logger"}
    return [
        o
        for o in overrides
        if not (o.lstrip("-").split("=", 1)[0].count(".") or ("=" in o and o.lstrip("-").split("=", 1)[0] in top))
    ]


def _summary_only(args: argparse.Namespace) -> bool:
    """``--select-best``, ``--summarize`` and ``--from-wandb``: read finished runs, run nothing. Returns whether
    one of them was asked for (and done); raises ``ConfigError`` on what it cannot read."""
    if args.select_best:
        best = select_best(Path(args.select_best))
        print(yaml.safe_dump(best, sort_keys=True), end="")
        print(f"wrote {args.select_best}/tuned.yaml")
        return True
    if args.summarize:
        out = Path(args.summarize)
        found = _runs_on_disk(out)
        if not found:
            raise ConfigError(f"{out}: no completed run (no result.json below it)")
        summarize(found, out)
        print(f"wrote {out}/summary.md, summary.csv and curves_*.png")
        return True
    if args.from_wandb:
        if not args.out:
            raise ConfigError("--from-wandb needs --out DIR for the summary")
        summarize(wandb_runs(args.from_wandb, args.group), Path(args.out))
        print(f"wrote {args.out}/summary.md, summary.csv and curves_*.png")
        return True
    return False


MAX_WORKERS = 1024  #: the most runs ipgnn-compare starts at a time


def _plan_runs(args: argparse.Namespace, overrides: Sequence[str]) -> list[RunSpec]:
    """The grid the flags ask for: configs (or the sweep's), algorithms, seeds and the sweep's variants;
    ``--workers`` and ``--out`` (a directory that can be written) checked first."""
    from ipgnn.cli import check_count, check_output

    configs = args.config or (sweep_configs(args.sweep) if args.sweep else [])
    if not configs or not args.out:
        raise ConfigError(
            "pass --config FILE (one or more; or a --sweep whose command names one) and --out DIR (or --summarize OUT)"
        )
    variants, sweep_seeds, sweep_algos, fixed = grid_axes(sweep_grid(args.sweep) if args.sweep else [{}])
    overrides = fixed + list(overrides)
    try:
        check_count("--workers", args.workers, 1, MAX_WORKERS)
        check_output(args.out, "--out", directory=True)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    seeds = parse_seeds(args.seeds) if args.seeds is not None else (sweep_seeds or list(range(5)))
    algos = [a.strip() for a in args.algos.split(",") if a.strip()] if args.algos else (sweep_algos or ["ipsac"])
    tuned = read_tuned(args.tuned) if args.tuned else None
    missing = sorted(set(algos) - set(tuned or algos))
    if missing:
        raise ConfigError(
            f"--tuned {args.tuned}: no setting for {', '.join(missing)}; tune it, or leave it out of --algos"
        )
    return plan(configs, algos, seeds, variants, overrides, args.algo_config, tuned)


def _print_plan(runs: Sequence[RunSpec], out: Path) -> None:
    """``--dry-run``: every planned run's directory and overrides, and how many are already complete."""
    done = sum((r.run_dir(out) / "result.json").is_file() for r in runs)
    for r in runs:
        print(f"{r.run_dir(out)}  {' '.join(r.config_overrides())}")
    print(f"{len(runs)} runs, {done} already complete, {len(runs) - done} to run (dry run: nothing was run)")


def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = _parser().parse_known_args(argv)
    bad = _unrecognised(overrides)
    if bad:
        print(
            f"error: unrecognised arguments {bad} (config overrides look like --section.key=value, or "
            f"--device=cpu for a top-level key)",
            file=sys.stderr,
        )
        return 2
    try:
        if _summary_only(args):
            return 0
        runs = _plan_runs(args, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.dry_run:
        _print_plan(runs, out)
        return 0
    results = execute(runs, out, args.workers)
    failed = [r for r, rc in results if rc != 0]
    summarize(_runs_on_disk(out), out)
    print((out / "summary.md").read_text())
    print(f"wrote {out}/summary.md, summary.csv and curves_*.png")
    if failed:
        print(f"error: {len(failed)} run(s) failed; their stderr.log says why", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
