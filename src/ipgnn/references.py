"""Reference controllers' results, computed once per task and cached: the lines a learned policy is
judged against.

A task that has classical controllers (traffic: FixedTime, MaxPressure, Advanced-MP and SOTL, see
:func:`ipgnn.envs.traffic_graph.reference_policies`) exposes them as ``env.reference_policies()``. They are
evaluated by the same :func:`ipgnn.runs.evaluate` as the learned policy: same engine, same episode
length, same action interval and yellow, same evaluation seeds, same metric definitions. The result is
cached under ``$IPGNN_CACHE/references/<digest>.json``; the digest covers the task's config (less the
communication graph, which the controllers do not read), the engine and the scenario's files
(``env.reference_key``), the seeds, the number of episodes and :data:`VERSION`.

A run logs them once, at step 0, as ``reference/<name>/<metric>`` rows of ``metrics.jsonl`` (and
W&B), where ``curves.png``, ``ipgnn-compare`` and the end-of-run verdict read them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("ipgnn")

VERSION = "3"  # bump when a controller or a metric definition changes: old cache entries are then ignored
PREFIX = "reference/"


def cache_dir() -> Path:
    """``<cache>/references`` (:func:`ipgnn.cache.cache_dir`): results can be evaluated again, so an unwritable
    cache falls back to a temporary one, with a warning."""
    from ipgnn.cache import cache_dir as ipgnn_cache

    return ipgnn_cache("references", temporary_ok=True)


def cache_key(env_cfg: dict[str, Any], reference_key: str, episodes: int, seed: int) -> str:
    task = {k: v for k, v in env_cfg.items() if k != "graph"}
    blob = json.dumps(
        {"env": task, "task": reference_key, "episodes": episodes, "seed": seed, "version": VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def reference_results(
    env,
    env_cfg: dict[str, Any],
    episodes: int,
    seed: int,
    evaluate: Callable[..., dict[str, float]] | None = None,
    cache: Path | None = None,
) -> dict[str, dict[str, float]]:
    """``{controller: {metric: value}}`` for ``env``'s reference controllers (``{}`` when it has none),
    from the cache or by evaluating each on ``episodes`` episodes from ``seed``.

    Args:
        env: a graph environment (its ``reference_policies()`` and ``reference_key``).
        env_cfg: the ``env`` config section as a dict (part of the cache key).
        episodes, seed: the evaluation episodes, exactly those the learned policy is evaluated on.
        evaluate: ``(act, env, episodes, seed) -> {"eval/<metric>": value}``; default
            :func:`ipgnn.runs.evaluate`, the learned policy's (a test passes a wrapper that counts the calls).
        cache: the cache directory (default ``$IPGNN_CACHE/references``).
    """
    policies = env.reference_policies() if hasattr(env, "reference_policies") else {}
    if not policies:
        return {}
    if evaluate is None:
        from ipgnn.runs import evaluate  # here, not at the top: plotting imports this module for from_rows
    path = (cache or cache_dir()) / f"{cache_key(env_cfg, env.reference_key, episodes, seed)}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())["results"]
        except (ValueError, KeyError):
            log.warning("ignoring an unreadable reference cache entry %s", path)
    results = {}
    for name, act in policies.items():
        log.info("evaluating the %s reference controller on %d episode(s) (cached afterwards)", name, episodes)
        metrics = evaluate(act, env, episodes, seed)
        results[name] = {k.split("/", 1)[1]: float(v) for k, v in metrics.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(
        json.dumps(
            {
                "key": {
                    "env": env_cfg,
                    "task": env.reference_key,
                    "episodes": episodes,
                    "seed": seed,
                    "version": VERSION,
                },
                "results": results,
            },
            indent=1,
            default=str,
        )
    )
    os.replace(tmp, path)  # atomic: a concurrent run reads the old entry or the new one, never half
    return results


def as_rows(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"reference/<name>/<metric>": value}``, the form logged to ``metrics.jsonl``."""
    return {f"{PREFIX}{name}/{k}": v for name, metrics in results.items() for k, v in metrics.items()}


def from_rows(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """The inverse of :func:`as_rows` over a run's metric rows."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith(PREFIX):
                name, metric = k[len(PREFIX) :].split("/", 1)
                out.setdefault(name, {})[metric] = v
    return out


def verdict(
    metric: str,
    value: float,
    results: dict[str, dict[str, float]],
    label: str = "",
    unit: str = "",
    lower_is_better: bool = True,
    context: str = "",
) -> str:
    """One line comparing a learned policy's ``metric`` with every reference controller's, e.g.
    ``final greedy average travel time 265.3 s: FixedTime 313.4 s (-15.4 %), MaxPressure 271.5 s (-2.3 %)
    -> beats MaxPressure``. The best reference named is the strongest one."""
    label = label or metric
    unit_s = f" {unit}" if unit else ""
    parts = []
    for name, m in results.items():
        if metric in m:
            ref = m[metric]
            rel = 100.0 * (value - ref) / abs(ref) if ref else float("nan")
            parts.append(f"{name} {ref:.1f}{unit_s} ({rel:+.1f} %)")
    refs = {n: m[metric] for n, m in results.items() if metric in m}
    if not refs:
        return f"final greedy {label} {value:.1f}{unit_s}"
    best = (min if lower_is_better else max)(refs, key=refs.get)
    better = (lambda a, b: a < b) if lower_is_better else (lambda a, b: a > b)
    beaten = [n for n in refs if better(value, refs[n])]
    if best in beaten:
        tail = f"beats {best}, the strongest reference"
    elif beaten:
        tail = f"beats {', '.join(beaten)} but not {best}"
    else:
        tail = "beats no reference controller"
    ctx = f" ({context})" if context else ""
    return f"final greedy {label} {value:.1f}{unit_s}{ctx}: {', '.join(parts)} -> {tail}"
