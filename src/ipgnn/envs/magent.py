"""MAgent *jungle* (app. A.3 of the paper, after DGN, Jiang et al. 2020) as a graph task.

The setting, on ``magent2``'s GridWorld engine:

- **World.** A ``map_size`` × ``map_size`` grid (30 by default). MAgent walls the outermost ring of
  cells, so agents and food live on the ``(map_size - 2)²`` interior cells. Each episode places the
  ``N = env.num_agents`` agents (20 in the paper) and ``F = num_food`` food items (12) on distinct
  interior cells drawn uniformly at random from the episode's seed.
- **Agents** form one group. Each step an agent takes one of 9 actions: 0 move up (y−1), 1 left
  (x−1), 2 stay, 3 right (x+1), 4 down (y+1), 5–8 attack the neighbouring cell up, left, right, down
  (attack range 1). Attacks are resolved before moves: an attack hits whatever stands on the target
  cell at the start of the step. Agents cannot die (HP 10, an attack does 1 damage and every agent
  recovers 4 HP a step, at least the most damage four neighbours can do), so the agent set — and the
  graph's N — is fixed for the whole episode.
- **Food** is a second, stationary group. Attacking a food item is *eating* it. Food is
  inexhaustible (it heals faster than four agents can bite it), so it never disappears and needs no
  respawn: all ``F`` items stay where they are for the whole episode (DGN describes its foods as
  fixed).
- **Observation** (a flat ``Box`` in ``[0, 1]``, ``11·11·5 + 2 = 607`` values): MAgent's view of the
  11 × 11 window centred on the agent (its ``CircleRange(5)``: cells farther than 5 from the centre
  read 0), flattened in ``(row = y offset, column = x offset, channel)`` order, with channels
  wall, agent presence, agent HP fraction, food presence, food HP fraction; then the agent's own
  coordinates ``(x, y) / (map_size - 1)``. (Nobody stays wounded past a step, so the HP channels
  equal the presence channels; they are kept as MAgent's standard layout.)
- **Episode**: ``env.max_steps`` steps (app. D: 25), then every agent is truncated; nothing
  terminates earlier.

Rewards, per agent and step, summed over everything that happened to it in the step (each is an
``env.options`` key; defaults in brackets. They realise the paper's description — food rewarded,
attacking another agent rewarded more — with magnitudes chosen here: DGN's exact values could not be
checked against its code when this was written, so set them to match a reference if you compare):

- ``food_reward`` [+1]: for each attack on a food item (one *bite*);
- ``attack_reward`` [+2]: to the attacker, for each attack on another agent;
- ``attacked_penalty`` [−4]: to the agent attacked, for each attack it receives;
- ``miss_penalty`` [−0.01]: for an attack on a cell with neither food nor agent (an empty cell or a
  wall), to discourage aimless attacks;
- ``step_reward`` [0]: to every agent at every step.

This is the *moral dilemma*: for the attacker an attack (+2) pays more than a bite of food (+1),
but it costs the team ``attack_reward + attacked_penalty`` (−2 by default), so the cooperative
optimum is to eat and never attack. (MAgent charges its per-type ``attack_penalty`` on every attack;
the rules here add it back on hits, so each figure above is exactly what the agent receives.)

Task metrics (per step, averaged over the episode by the adapter): ``food_eaten``, the number of
bites of food in the step, and ``attacks``, the number of agent-on-agent attacks in the step.
The communication graph is k-NN over agents' grid positions (``env.graph.kind: knn``, k = 4 in the
paper for fewer than 30 agents) or fully connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils.env import ParallelEnv

from ipgnn.config import ConfigError, EnvConfig, check_options

if TYPE_CHECKING:
    from ipgnn.envs.pettingzoo import ParallelGraphEnv

JUNGLE_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "map_size": int,
    "num_food": int,
    "food_reward": float,
    "attack_reward": float,
    "attacked_penalty": float,
    "miss_penalty": float,
    "step_reward": float,
}

# Engine constants: nobody can die or be eaten up. At most 4 cells are in attack range of a cell, so
# damage 1 per attack and a recovery of 4 per step keep every HP above 0 (10 - 4 at worst).
_HP = 10.0
_DAMAGE = 1.0
_RECOVER = 4.0
_VIEW_RADIUS = 5  # an 11 x 11 window
_NUM_ACTIONS = 9  # 5 moves (incl. stay) + 4 attacks
_STAY = 2


class JungleParallelEnv(ParallelEnv):
    """The jungle as a PettingZoo ``ParallelEnv`` (see the module docstring for the setting).

    Args:
        n_agents: number of agents ``N``.
        num_food: number of food items ``F``.
        map_size: side of the square map, walls included (the interior is ``map_size - 2``).
        max_cycles: episode length in steps.
        food_reward, attack_reward, attacked_penalty, miss_penalty, step_reward: the rewards.
    """

    metadata = {"name": "magent_jungle_v0", "render_modes": []}

    def __init__(
        self,
        n_agents: int = 20,
        num_food: int = 12,
        map_size: int = 30,
        max_cycles: int = 25,
        food_reward: float = 1.0,
        attack_reward: float = 2.0,
        attacked_penalty: float = -4.0,
        miss_penalty: float = -0.01,
        step_reward: float = 0.0,
    ):
        try:
            from magent2 import gridworld as gw
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("the MAgent jungle task needs magent2: pip install 'ipgnn[magent]'") from exc

        _check_sizes(n_agents, num_food, map_size, max_cycles)
        self.n_agents, self.num_food, self.map_size, self.max_cycles = n_agents, num_food, map_size, max_cycles
        self.rewards_def = {
            "food_reward": float(food_reward),
            "attack_reward": float(attack_reward),
            "attacked_penalty": float(attacked_penalty),
            "miss_penalty": float(miss_penalty),
            "step_reward": float(step_reward),
        }
        self.engine = gw.GridWorld(_jungle_config(gw, map_size, self.rewards_def))
        self._food_handle, self._agent_handle = self.engine.get_handles()
        view, n_actions = self._read_engine()

        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self.obs_dim = int(np.prod(view)) + 2
        box = spaces.Box(low=0.0, high=1.0, shape=(self.obs_dim,), dtype=np.float32)
        self.observation_spaces = {a: box for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(n_actions) for a in self.possible_agents}
        self.render_mode = None
        self._rng: np.random.Generator | None = None
        self.frames = 0
        self.last_food_eaten = 0
        self.last_attacks = 0

    def _read_engine(self) -> tuple[tuple[int, ...], int]:
        """Check the engine's view and action space against this module's layout and read its attack
        table: returns the agents' view shape and the number of actions."""
        view = tuple(int(v) for v in self.engine.get_view_space(self._agent_handle))
        n_actions = int(self.engine.get_action_space(self._agent_handle)[0])
        if view[:2] != (2 * _VIEW_RADIUS + 1,) * 2 or n_actions != _NUM_ACTIONS:  # pragma: no cover
            raise RuntimeError(
                f"magent2 gave view {view} and {n_actions} actions; this module expects "
                f"an 11x11 view and {_NUM_ACTIONS} actions (a different magent2 version?)"
            )
        self.view_shape = view
        # attack action base + k -> (dx, dy) of its target cell, read from the engine's own table
        attack_base, view2attack = self.engine.get_view2attack(self._agent_handle)
        self._attack_base = int(attack_base)
        offsets = np.zeros((n_actions - self._attack_base, 2), dtype=np.int64)
        for row, col in zip(*np.nonzero(view2attack >= 0)):
            offsets[view2attack[row, col]] = (col - _VIEW_RADIUS, row - _VIEW_RADIUS)
        self._attack_offsets = offsets
        return view, n_actions

    # ----------------------------------------------------------------------------------------------
    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self.action_spaces[agent]

    def agent_positions(self) -> np.ndarray:
        """``[N, 2]`` grid coordinates ``(x, y)`` of the agents, in ``possible_agents`` order."""
        return self.engine.get_pos(self._agent_handle).astype(np.float32)

    def food_positions(self) -> np.ndarray:
        """``[F, 2]`` grid coordinates ``(x, y)`` of the food items."""
        return self.engine.get_pos(self._food_handle).astype(np.float32)

    def step_metrics(self) -> dict[str, float]:
        """What happened in the last step: bites of food and agent-on-agent attacks."""
        return {"food_eaten": float(self.last_food_eaten), "attacks": float(self.last_attacks)}

    # ----------------------------------------------------------------------------------------------
    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Start an episode; the same ``seed`` gives the same episode for the same actions.

        ``options`` may fix the layout instead of drawing it: ``agent_positions`` (``N`` cells) and
        ``food_positions`` (``F`` cells), each a list of ``(x, y)`` interior cells, all distinct.
        Other keys are ignored.
        """
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        self.engine.set_seed(int(self._rng.integers(2**31 - 1)))
        self.engine.reset()
        inner = self.map_size - 2
        cells = self._rng.choice(inner * inner, size=self.n_agents + self.num_food, replace=False)
        xy = np.stack([cells % inner + 1, cells // inner + 1], axis=1).astype(np.int32)
        agent_xy, food_xy = xy[: self.n_agents], xy[self.n_agents :]
        options = options or {}
        if "agent_positions" in options:
            agent_xy = self._check_cells(options["agent_positions"], self.n_agents, "agent_positions")
        if "food_positions" in options:
            food_xy = self._check_cells(options["food_positions"], self.num_food, "food_positions")
        both = np.concatenate([agent_xy, food_xy])
        if len(np.unique(both, axis=0)) != len(both):
            raise ValueError("reset options: agents and food must stand on distinct cells")
        self.engine.add_agents(self._agent_handle, method="custom", pos=agent_xy.tolist())
        if self.num_food:
            self.engine.add_agents(self._food_handle, method="custom", pos=food_xy.tolist())
        placed = (self.engine.get_num(self._agent_handle), self.engine.get_num(self._food_handle))
        if placed != (self.n_agents, self.num_food):  # pragma: no cover - an engine invariant
            raise RuntimeError(
                f"magent2 placed {placed[0]} agents and {placed[1]} food items, "
                f"expected {self.n_agents} and {self.num_food}"
            )
        self.agents = list(self.possible_agents)
        self.frames = 0
        self.last_food_eaten = self.last_attacks = 0
        return self._observations(), {a: {} for a in self.agents}

    def _check_cells(self, cells: Any, n: int, name: str) -> np.ndarray:
        xy = np.asarray(cells, dtype=np.int64).reshape(-1, 2) if len(cells) else np.zeros((0, 2), np.int64)
        if len(xy) != n:
            raise ValueError(f"reset options: {name} needs {n} cells, got {len(xy)}")
        lo, hi = 1, self.map_size - 2
        outside = [tuple(c) for c in xy.tolist() if not (lo <= c[0] <= hi and lo <= c[1] <= hi)]
        if outside:
            raise ValueError(f"reset options: {name} {outside} are not interior cells (x and y in {lo}..{hi})")
        return xy.astype(np.int32)

    def _observations(self) -> dict[str, np.ndarray]:
        view, _ = self.engine.get_observation(self._agent_handle)
        coords = self.engine.get_pos(self._agent_handle).astype(np.float32) / float(self.map_size - 1)
        flat = np.concatenate([view.reshape(self.n_agents, -1), coords], axis=1).astype(np.float32)
        return {a: flat[i] for i, a in enumerate(self.possible_agents)}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("step() called on a finished episode: call reset() first")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise KeyError(
                f"actions for unknown agents {sorted(unknown)}; agents are {self.possible_agents[0]}.."
                f"{self.possible_agents[-1]}"
            )
        act = np.full(self.n_agents, _STAY, dtype=np.int32)  # an agent given no action stays
        for i, a in enumerate(self.possible_agents):
            if a in actions and actions[a] is not None:
                act[i] = int(actions[a])
        bad = np.flatnonzero((act < 0) | (act >= _NUM_ACTIONS))
        if bad.size:
            raise ValueError(
                f"actions must be in 0..{_NUM_ACTIONS - 1}; got {act[bad].tolist()} for "
                f"{[self.possible_agents[i] for i in bad]}"
            )
        self._count_hits(act)
        self.engine.set_action(self._agent_handle, act)
        self.engine.step()
        rew = self.engine.get_reward(self._agent_handle)
        self.engine.clear_dead()
        if self.engine.get_num(self._agent_handle) != self.n_agents:  # pragma: no cover - engine invariant
            raise RuntimeError("an agent died in the jungle, which its HP settings should prevent")
        self.frames += 1
        done = self.frames >= self.max_cycles
        obs = self._observations()
        rewards = {a: float(rew[i]) for i, a in enumerate(self.possible_agents)}
        terminations = {a: False for a in self.possible_agents}
        truncations = {a: done for a in self.possible_agents}
        infos: dict[str, dict] = {a: {} for a in self.possible_agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def _count_hits(self, act: np.ndarray) -> None:
        """Count this step's bites and attacks from the positions before it (attacks precede moves)."""
        attackers = np.flatnonzero(act >= self._attack_base)
        if attackers.size == 0:
            self.last_food_eaten = self.last_attacks = 0
            return
        pos = self.engine.get_pos(self._agent_handle).astype(np.int64)
        targets = pos[attackers] + self._attack_offsets[act[attackers] - self._attack_base]
        w = self.map_size
        keys = targets[:, 0] * w + targets[:, 1]
        agent_keys = pos[:, 0] * w + pos[:, 1]
        food = self.engine.get_pos(self._food_handle).astype(np.int64).reshape(-1, 2)
        food_keys = food[:, 0] * w + food[:, 1]
        self.last_food_eaten = int(np.isin(keys, food_keys).sum())
        self.last_attacks = int(np.isin(keys, agent_keys).sum())

    def render(self) -> None:
        return None

    def close(self) -> None:
        pass


def _check_sizes(n_agents: int, num_food: int, map_size: int, max_cycles: int) -> None:
    """Raise ``ValueError`` unless the agents and the food fit on the map's interior and an episode has a step."""
    if n_agents < 1:
        raise ValueError(f"num_agents must be at least 1, got {n_agents}")
    if num_food < 0:
        raise ValueError(f"num_food must be at least 0, got {num_food}")
    if map_size < 3:
        raise ValueError(f"map_size must be at least 3 (the outer ring is wall), got {map_size}")
    free = (map_size - 2) ** 2
    if n_agents + num_food > free:
        raise ValueError(
            f"map_size {map_size} has {free} free cells (the outer ring is wall), too few for "
            f"{n_agents} agents + {num_food} food items"
        )
    if max_cycles < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_cycles}")


def _jungle_config(gw: Any, map_size: int, rewards: dict[str, float]) -> Any:
    """The GridWorld ``Config`` of the jungle: the food group, then the agent group, and the reward rules
    (``rewards``: :attr:`JungleParallelEnv.rewards_def`)."""
    miss_penalty = rewards["miss_penalty"]
    cfg = gw.Config()
    cfg.set({"map_width": map_size, "map_height": map_size, "minimap_mode": False})
    agent_type = cfg.register_agent_type(
        "agent",
        {
            "width": 1,
            "length": 1,
            "hp": _HP,
            "speed": 1,
            "view_range": gw.CircleRange(_VIEW_RADIUS),
            "attack_range": gw.CircleRange(1),
            "damage": _DAMAGE,
            "step_recover": _RECOVER,
            "attack_in_group": 1,
            "attack_penalty": miss_penalty,
            "step_reward": rewards["step_reward"],
        },
    )
    food_type = cfg.register_agent_type(
        "food",
        {
            "width": 1,
            "length": 1,
            "hp": _HP,
            "speed": 0,
            "view_range": gw.CircleRange(1),
            "attack_range": gw.CircleRange(0),
            "damage": 0,
            "step_recover": _RECOVER,
        },
    )
    g_food = cfg.add_group(food_type)
    g_agent = cfg.add_group(agent_type)
    attacker = gw.AgentSymbol(g_agent, index="any")
    victim = gw.AgentSymbol(g_agent, index="any")
    food = gw.AgentSymbol(g_food, index="any")
    # the engine charges miss_penalty on every attack; hits get it back so the totals are exact
    cfg.add_reward_rule(
        gw.Event(attacker, "attack", food), receiver=attacker, value=rewards["food_reward"] - miss_penalty
    )
    cfg.add_reward_rule(
        gw.Event(attacker, "attack", victim),
        receiver=[attacker, victim],
        value=[rewards["attack_reward"] - miss_penalty, rewards["attacked_penalty"]],
    )
    return cfg


def _positions(env: Any) -> np.ndarray:
    return env.unwrapped.agent_positions()


def _metrics(env: Any) -> dict[str, float]:
    return env.unwrapped.step_metrics()


def make_magent_jungle(cfg: EnvConfig) -> ParallelGraphEnv:
    """Build the jungle task from the ``env`` config section (``env.task: magent_jungle``).

    ``env.num_agents`` is N, ``env.max_steps`` the episode length, and ``env.options`` may set
    ``map_size`` (30), ``num_food`` (12), ``food_reward`` (1), ``attack_reward`` (2),
    ``attacked_penalty`` (-4), ``miss_penalty`` (-0.01) and ``step_reward`` (0).
    """
    from ipgnn.envs.pettingzoo import ParallelGraphEnv

    opts = check_options(dict(cfg.options), JUNGLE_OPTIONS, "magent_jungle")
    if cfg.continuous_actions:
        raise ConfigError("env.continuous_actions: the MAgent jungle has discrete actions only; set it to false")
    try:
        env = JungleParallelEnv(n_agents=cfg.num_agents, max_cycles=cfg.max_steps, **opts)
    except ValueError as exc:
        raise ConfigError(f"env (task 'magent_jungle'): {exc}") from None
    return ParallelGraphEnv(env, cfg.graph, position_fn=_positions, metrics_fn=_metrics)
