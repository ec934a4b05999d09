"""The graph adapter of traffic-signal control, the task ``env.task: traffic``: it checks the ``env`` config,
resolves the scenario and the engine, builds the simulator environment
(:class:`ipgnn.traffic.simulator_env.TrafficSignalEnv`, a PettingZoo ``ParallelEnv``) and wraps it as a
graph environment (:class:`~ipgnn.envs.pettingzoo.ParallelGraphEnv`) with the road graph, the headline
metric (average travel time) and the reference controllers. Imports run from here into :mod:`ipgnn.traffic`,
never back.

``env.options`` (checked here, with errors naming the key):

- ``scenario``: a directory holding CityFlow's ``roadnet.json`` and ``flow.json`` (relative paths are
  taken from the working directory), or a generator spec ``{kind: grid, rows: 7, cols: 7, ...}`` /
  ``{kind: manhattan}`` (see :mod:`ipgnn.traffic.generate`), generated once into the cache;
- ``flow``: the flow file of a scenario directory (default ``flow.json``; ``jinan_3x4`` also holds
  ``flow_2000.json`` and ``flow_2500.json``, the field's JN2 and JN3);
- ``engine``: ``auto`` (CityFlow when ``import cityflow`` works, SUMO otherwise; the choice is logged),
  ``sumo`` or ``cityflow``;
- ``action_interval`` (10, from 1 to 3600 s), ``yellow`` (5, from 0 to ``action_interval - 1`` s), ``reward``
  (``travel_time`` (default), ``queue``, ``pressure`` or ``waiting``), ``features`` (subset of
  ``[phase, count, waiting, pressure]``, default all); see :mod:`ipgnn.traffic.simulator_env` for their
  definitions. Ranges are checked before a scenario is generated or an engine started (:func:`check_traffic_options`).

``env.max_steps`` is the number of decisions per episode (app. D: 100): an episode simulates ``env.max_steps *
action_interval`` seconds, in which some flow must start, and at most ``MAX_VEHICLES`` vehicles may be scheduled
(:func:`check_demand`); ``env.num_agents`` must equal
the scenario's signalised intersections; ``env.graph.kind`` is ``env`` (the road graph, the paper's
default for CityFlow) or ``full`` (the sec. 5.3 ablation).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from ipgnn.config import ConfigError, EnvConfig, check_options
from ipgnn.envs.pettingzoo import Headline

log = logging.getLogger("ipgnn")

OPTIONS = {
    "scenario": (str, dict),
    "flow": str,  # the flow file in a scenario directory (default flow.json), e.g. jinan_3x4's flow_2000.json
    "engine": str,
    "action_interval": int,
    "yellow": int,
    "reward": str,
    "features": list,
}


def resolve_scenario(spec: Any) -> Path:
    from ipgnn.traffic.generate import SpecError, materialise

    if isinstance(spec, dict):
        if "kind" not in spec:
            raise ConfigError("env.options.scenario: a generator spec needs 'kind' (grid or manhattan)")
        try:
            return materialise(spec)
        except SpecError as exc:
            raise ConfigError(f"env.options.scenario.{exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"env.options.scenario: {exc}") from None
    path = Path(spec).expanduser()
    if not (path / "roadnet.json").is_file():
        raise ConfigError(
            f"env.options.scenario: no roadnet.json in '{path}' (give a CityFlow scenario "
            "directory, or a generator spec such as {kind: grid, rows: 7, cols: 7})"
        )
    return path


MAX_ACTION_INTERVAL = 3600  #: the longest decision interval, in simulated seconds


def check_traffic_options(opts: dict[str, Any]) -> None:
    """The ranges and choices of traffic's ``env.options`` (their types are :func:`check_options`'s), checked
    before a scenario is generated or an engine started: ``action_interval`` from 1 to
    :data:`MAX_ACTION_INTERVAL` s, ``yellow`` from 0 to ``action_interval - 1`` s, a known ``reward`` and
    ``engine``, and ``features`` a non-empty subset of the known ones."""
    from ipgnn.traffic.simulator_env import DEFAULT_FEATURES, FEATURES, REWARDS

    interval, yellow = opts.get("action_interval", 10), opts.get("yellow", 5)
    if not 1 <= interval <= MAX_ACTION_INTERVAL:
        raise ConfigError(
            f"env.options.action_interval: expected an integer from 1 to {MAX_ACTION_INTERVAL} (simulated "
            f"seconds per decision), got {interval}"
        )
    if not 0 <= yellow < interval:
        raise ConfigError(
            f"env.options.yellow: expected an integer from 0 to {interval - 1} (seconds of transition phase, "
            f"shorter than env.options.action_interval = {interval}), got {yellow}"
        )
    if opts.get("reward", "travel_time") not in REWARDS:
        raise ConfigError(f"env.options.reward: expected one of {', '.join(REWARDS)}, got {opts['reward']!r:.60}")
    features = opts.get("features", list(DEFAULT_FEATURES))
    if not features or any(not isinstance(f, str) or f not in FEATURES for f in features):
        raise ConfigError(
            f"env.options.features: expected a non-empty list drawn from {', '.join(FEATURES)}, got {features!r:.80}"
        )
    if opts.get("engine", "auto") not in ENGINES:
        raise ConfigError(f"env.options.engine: expected auto, sumo or cityflow, got {opts['engine']!r:.60}")


def check_demand(scenario, cfg: EnvConfig, interval: int) -> None:
    """An episode (``env.max_steps`` decisions of ``interval`` simulated seconds) sees traffic, and at most
    :data:`~ipgnn.traffic.scenario.MAX_VEHICLES` vehicles: refused otherwise, before an engine starts."""
    from ipgnn.traffic.scenario import MAX_VEHICLES, scheduled_vehicles

    horizon = cfg.max_steps * interval
    where = f"env.max_steps: an episode of {cfg.max_steps} decisions x {interval} s (env.options.action_interval)"
    if scenario.first_start >= horizon:
        raise ConfigError(
            f"{where} simulates {horizon} s, but every flow in {scenario.flow_path} starts at {scenario.first_start:g} "
            f"s or later: no vehicle would enter and every metric would be 0; raise env.max_steps to at least "
            f"{math.floor(scenario.first_start / interval) + 1}, or move the flows' startTime earlier"
        )
    vehicles, k = scheduled_vehicles(scenario.flows, horizon)
    if vehicles > MAX_VEHICLES:
        f = scenario.flows[k]
        raise ConfigError(
            f"{where} schedules {vehicles:.3g} vehicles from {scenario.flow_path} (flow[{k}]: one every "
            f"{f['interval']:g} s from {f['startTime']:g} s); at most {MAX_VEHICLES:,}: lengthen the flows' "
            "interval or shorten the episode"
        )


ENGINES = ("auto", "sumo", "cityflow")


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``cityflow`` when ``import cityflow`` works, else ``sumo``; other names unchanged."""
    from ipgnn.traffic.cityflow_engine import cityflow_available

    return ("cityflow" if cityflow_available() else "sumo") if engine == "auto" else engine


def make_engine_factory(scenario, engine: str):
    from ipgnn.traffic.cityflow_engine import CityFlowEngine, cityflow_available

    if engine not in ENGINES:
        raise ConfigError(f"env.options.engine: expected auto, sumo or cityflow, got {engine!r}")
    if engine == "cityflow" and not cityflow_available():
        raise ConfigError(
            "env.options.engine: 'cityflow' requested but 'import cityflow' fails; build and install "
            'it with `ipgnn-data build-cityflow` (README, "Installation options") or use engine: sumo'
        )
    if resolve_engine(engine) == "cityflow":
        from ipgnn.traffic.scenario import scenario_digest

        log.info("traffic engine: CityFlow")
        key = scenario_digest(scenario)  # read the files once, not at every episode's engine
        return lambda seed: CityFlowEngine(scenario, seed, key=key)
    from ipgnn.traffic.sumo_convert import convert
    from ipgnn.traffic.sumo_engine import SumoEngine

    try:
        converted = convert(scenario)
    except RuntimeError as exc:  # SUMO missing
        raise ConfigError(f"env.options.engine: {exc}") from None
    log.info("traffic engine: SUMO (%s)", "CityFlow not importable" if engine == "auto" else "requested")
    return lambda seed: SumoEngine(scenario, converted, seed)


def make_traffic_env(cfg: EnvConfig, raw: bool = False):
    from ipgnn.envs.pettingzoo import ParallelGraphEnv
    from ipgnn.traffic.scenario import ScenarioError, load_scenario, scenario_digest
    from ipgnn.traffic.simulator_env import DEFAULT_FEATURES, TrafficSignalEnv

    opts = check_options(dict(cfg.options), OPTIONS, "traffic")
    if "scenario" not in opts:
        raise ConfigError("env.options.scenario: required for task 'traffic' (a directory or a generator spec)")
    if cfg.continuous_actions:
        raise ConfigError("env.continuous_actions: traffic-signal control has discrete actions (phases)")
    if cfg.graph.kind == "knn":
        raise ConfigError("env.graph.kind: use 'env' (the road graph) or 'full' for traffic, not 'knn'")
    check_traffic_options(opts)
    try:
        scenario = load_scenario(resolve_scenario(opts["scenario"]), flow=opts.get("flow", "flow.json"))
    except ScenarioError as exc:
        raise ConfigError(f"env.options.scenario: {exc}") from None
    if cfg.num_agents != scenario.num_agents:
        raise ConfigError(
            f"env.num_agents: the scenario has {scenario.num_agents} signalised intersections, "
            f"the config says {cfg.num_agents}"
        )
    check_demand(scenario, cfg, opts.get("action_interval", 10))
    try:
        env = TrafficSignalEnv(
            scenario,
            make_engine_factory(scenario, opts.get("engine", "auto")),
            action_interval=opts.get("action_interval", 10),
            yellow=opts.get("yellow", 5),
            max_decisions=cfg.max_steps,
            reward=opts.get("reward", "travel_time"),
            features=tuple(opts.get("features", DEFAULT_FEATURES)),
        )
    except ValueError as exc:
        raise ConfigError(f"env.options: {exc}") from None
    if raw:
        return env
    positions = scenario.positions().numpy()
    engine = resolve_engine(opts.get("engine", "auto"))
    return ParallelGraphEnv(
        env,
        cfg.graph,
        position_fn=lambda e: positions,
        env_edges=scenario.edge_index(),
        episode_metrics_fn=lambda e: e.metrics(),
        integer_observations=True,  # one-hot phases, vehicle counts, pressures (count differences)
        headline=ATT,
        reference_policies_fn=reference_policies,
        reference_key=f"{engine}:{scenario_digest(scenario)}",
        static_positions=True,
    )


ATT = Headline("average_travel_time", "average travel time", "s", lower_is_better=True, paper_sign=-1.0)


def reference_policies(env) -> dict:
    """FixedTime, MaxPressure, Advanced-MP and SOTL at the environment's decision level (its action interval
    and yellow), with their published parameters (:mod:`ipgnn.traffic.controllers`)."""
    from ipgnn.traffic.controllers import (
        advanced_max_pressure_policy,
        fixed_time_policy,
        max_pressure_policy,
        sotl_policy,
    )

    return {
        "FixedTime": fixed_time_policy(env),
        "MaxPressure": max_pressure_policy(env),
        "Advanced-MP": advanced_max_pressure_policy(env),
        "SOTL": sotl_policy(env),
    }
