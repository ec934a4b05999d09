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
- ``action_interval`` (10), ``yellow`` (5), ``reward`` (``travel_time`` (default), ``queue``,
  ``pressure`` or ``waiting``), ``features`` (subset of ``[phase, count, waiting, pressure]``, default
  all); see :mod:`ipgnn.traffic.simulator_env` for their definitions.

``env.max_steps`` is the number of decisions per episode (app. D: 100); ``env.num_agents`` must equal
the scenario's signalised intersections; ``env.graph.kind`` is ``env`` (the road graph, the paper's
default for CityFlow) or ``full`` (the sec. 5.3 ablation).
"""

from __future__ import annotations

import logging
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
    from ipgnn.traffic.generate import materialise

    if isinstance(spec, dict):
        if "kind" not in spec:
            raise ConfigError("env.options.scenario: a generator spec needs 'kind' (grid or manhattan)")
        try:
            return materialise(spec)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"env.options.scenario: {exc}") from None
    path = Path(spec).expanduser()
    if not (path / "roadnet.json").is_file():
        raise ConfigError(
            f"env.options.scenario: no roadnet.json in '{path}' (give a CityFlow scenario "
            "directory, or a generator spec such as {kind: grid, rows: 7, cols: 7})"
        )
    return path


def resolve_engine(engine: str) -> str:
    """``auto`` -> ``cityflow`` when ``import cityflow`` works, else ``sumo``; other names unchanged."""
    from ipgnn.traffic.cityflow_engine import cityflow_available

    return ("cityflow" if cityflow_available() else "sumo") if engine == "auto" else engine


def make_engine_factory(scenario, engine: str):
    from ipgnn.traffic.cityflow_engine import CityFlowEngine, cityflow_available

    if engine not in ("auto", "sumo", "cityflow"):
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
    from ipgnn.traffic.simulator_env import FEATURES, TrafficSignalEnv

    opts = check_options(dict(cfg.options), OPTIONS, "traffic")
    if "scenario" not in opts:
        raise ConfigError("env.options.scenario: required for task 'traffic' (a directory or a generator spec)")
    if cfg.continuous_actions:
        raise ConfigError("env.continuous_actions: traffic-signal control has discrete actions (phases)")
    if cfg.graph.kind == "knn":
        raise ConfigError("env.graph.kind: use 'env' (the road graph) or 'full' for traffic, not 'knn'")
    try:
        scenario = load_scenario(resolve_scenario(opts["scenario"]), flow=opts.get("flow", "flow.json"))
    except ScenarioError as exc:
        raise ConfigError(f"env.options.scenario: {exc}") from None
    if cfg.num_agents != scenario.num_agents:
        raise ConfigError(
            f"env.num_agents: the scenario has {scenario.num_agents} signalised intersections, "
            f"the config says {cfg.num_agents}"
        )
    try:
        env = TrafficSignalEnv(
            scenario,
            make_engine_factory(scenario, opts.get("engine", "auto")),
            action_interval=opts.get("action_interval", 10),
            yellow=opts.get("yellow", 5),
            max_decisions=cfg.max_steps,
            reward=opts.get("reward", "travel_time"),
            features=tuple(opts.get("features", FEATURES)),
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
    """FixedTime and MaxPressure at the environment's decision level (its action interval and yellow)."""
    from ipgnn.traffic.controllers import fixed_time_policy, max_pressure_policy

    return {"FixedTime": fixed_time_policy(env), "MaxPressure": max_pressure_policy(env)}
