r"""Pieces shared by the baselines (IQL, DGN, QMIX, MADDPG, MADDPG-S, PIC).

- options: :func:`parse_options` checks ``algo.options`` against a schema of ``name -> (types,
  default)`` and fills in the defaults;
- exploration: the linear :math:`\epsilon` schedule and :math:`\epsilon`-greedy over valid actions;
- action masks: :func:`masked_max` / :func:`masked_argmax` (the max over next actions of a Q-learning
  target only ranges over the actions valid in :math:`s'`);
- targets: :func:`polyak_update` (:math:`\bar\theta \leftarrow \tau\theta + (1-\tau)\bar\theta`;
  :math:`\tau = 1` is a hard copy);
- networks: :class:`TypedMLP` (per-type first layer, then shared layers) and :class:`BatchedLinear`
  (``G`` independent linear layers evaluated as one ``baddbmm``: the per-agent critics of MADDPG);
- memory: :func:`available_memory` and :func:`check_memory`, which refuse a configuration up front with
  the figure when its networks cannot fit (sizes that grow with N);
- :class:`BaselineAlgo`: counters, optimisers, one gradient step with per-network gradient norms,
  and the full state (networks, targets, optimisers, counters) for an exact resume.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.config import AlgoConfig, ConfigError, check_options
from ipgnn.nn.propagation import TypedEncoder

NoneType = type(None)
MEMORY_FRACTION = 0.8  # refuse a configuration whose estimate exceeds this share of the free memory


# --------------------------------------------------------------------------------------------------
# Options and task checks


def parse_options(options: dict[str, Any], schema: dict[str, tuple[Any, Any]], name: str) -> dict[str, Any]:
    """``algo.options`` checked against ``{option: (accepted type(s), default)}``; returns every option,
    the defaults filled in. Errors name ``algo.options.<key>`` and the algorithm."""
    opts = check_options(dict(options), {k: v[0] for k, v in schema.items()}, name, section="algo.options")
    return {k: opts.get(k, default) for k, (_, default) in schema.items()}


def require_discrete(name: str, spec: Any, instead: str = "maddpg, maddpg_s, pic or ipsac") -> None:
    """Q-learning methods take a max over actions: refuse continuous tasks with what to use instead."""
    if not spec.discrete:
        raise ConfigError(
            f"algo.name: '{name}' is a Q-learning method (a max over a finite set of actions) and this task has "
            f"continuous actions ({spec.action_dim}-dimensional); use {instead}, or set "
            f"env.continuous_actions: false if the task has a discrete version"
        )


def require_positive(opts: dict[str, Any], keys: Iterable[str], name: str, allow_zero: bool = False) -> None:
    for k in keys:
        v = opts[k]
        if v is not None and (v < 0 or (v == 0 and not allow_zero)):
            raise ConfigError(
                f"algo.options.{k}: expected a {'non-negative' if allow_zero else 'positive'} "
                f"number for '{name}', got {v!r}"
            )


def require_choice(opts: dict[str, Any], key: str, valid: Iterable[str], name: str) -> None:
    """``opts[key]`` must be one of ``valid``."""
    valid = tuple(valid)
    if opts[key] not in valid:
        raise ConfigError(f"algo.options.{key}: expected {' or '.join(valid)} for '{name}', got {opts[key]!r}")


def require_unit(opts: dict[str, Any], keys: Iterable[str], name: str) -> None:
    for k in keys:
        if not 0.0 <= opts[k] <= 1.0:
            raise ConfigError(f"algo.options.{k}: expected a value in [0, 1] for '{name}', got {opts[k]!r}")


# --------------------------------------------------------------------------------------------------
# Exploration and action masks


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    r""":math:`\epsilon_t = \epsilon_0 + \min(1, t / T)(\epsilon_T - \epsilon_0)`: linear from ``start`` to
    ``end`` over ``decay_steps`` environment steps, then constant (the schedule of Rashid et al. 2018,
    sec. 6: "annealed linearly from 1.0 to 0.05 over 50k time steps")."""
    if decay_steps <= 0:
        return float(end)
    frac = min(1.0, max(0, step) / decay_steps)
    return float(start + frac * (end - start))


def _check_mask(mask: Tensor) -> None:
    if not bool(mask.any(-1).all()):
        raise ValueError("an agent has no valid action: every row of action_mask needs one True")


def masked_values(q: Tensor, mask: Tensor | None) -> Tensor:
    """``q`` with invalid actions set to the lowest finite value (so no max or argmax picks them)."""
    if mask is None:
        return q
    _check_mask(mask)
    return q.masked_fill(~mask, torch.finfo(q.dtype).min)


def masked_max(q: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\max_{a \in \mathcal A_i(s)} q_i(a)` per row, ``[..., A] -> [...]``."""
    return masked_values(q, mask).max(-1).values


def masked_argmax(q: Tensor, mask: Tensor | None) -> Tensor:
    r""":math:`\arg\max_{a \in \mathcal A_i(s)} q_i(a)` per row (long)."""
    return masked_values(q, mask).argmax(-1)


def random_valid_actions(num: int, num_actions: int, mask: Tensor | None, device: torch.device) -> Tensor:
    """Uniformly random valid actions ``[num]`` from torch's global generator."""
    if mask is None:
        return torch.randint(num_actions, (num,), device=device)
    _check_mask(mask)
    return torch.multinomial(mask.float(), 1).squeeze(-1)


def epsilon_greedy(q: Tensor, mask: Tensor | None, epsilon: float) -> Tensor:
    r"""Per agent: a uniformly random valid action with probability :math:`\epsilon`, otherwise
    :math:`\arg\max_{a \text{ valid}} q_i(a)`. ``q``: ``[n, A]``."""
    greedy = masked_argmax(q, mask)
    if epsilon <= 0.0:
        return greedy
    explore = torch.rand(q.size(0), device=q.device) < epsilon
    rand = random_valid_actions(q.size(0), q.size(-1), mask, q.device)
    return torch.where(explore, rand, greedy)


def masked_logits(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Logits with invalid actions at the lowest finite value: softmax and Gumbel-max never pick them."""
    return masked_values(logits, mask)


def gumbel_onehot(logits: Tensor, temperature: float, hard: bool = True) -> Tensor:
    r"""Gumbel-softmax sample :math:`\mathrm{softmax}((z + g) / T)`, :math:`g \sim \mathrm{Gumbel}(0, 1)`
    (Jang et al. 2017). ``hard``: straight-through, a one-hot sample forward and the gradient of the relaxed
    sample backward; otherwise the relaxed sample. ``logits`` should already be masked."""
    return F.gumbel_softmax(logits, tau=temperature, hard=hard)


# --------------------------------------------------------------------------------------------------
# Targets


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    r""":math:`\bar\theta \leftarrow \tau\theta + (1 - \tau)\bar\theta` for every parameter (``tau = 1``:
    a hard copy, as DQN's and QMIX's periodic target updates)."""
    for tp, p in zip(target.parameters(), source.parameters()):
        if tau >= 1.0:
            tp.copy_(p)
        else:
            tp.lerp_(p, tau)


def make_target(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` (the target network)."""
    return copy.deepcopy(module).requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# Networks


class TypedMLP(nn.Module):
    r"""An MLP shared by all agents with a per-type first layer (:class:`~ipgnn.nn.propagation.TypedEncoder`,
    app. B.2 of the IP paper for heterogeneous agents):
    :math:`f(o_i) = W_L \mathrm{ReLU}(\cdots \mathrm{ReLU}(W_{\tau(i)} o_i + b_{\tau(i)}))`.

    Args:
        in_dim, hidden, out_dim: sizes; ``layers`` hidden layers of width ``hidden`` (>= 1).
        num_types: agent types (one first layer each).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, num_types: int = 1):
        super().__init__()
        self.encoder = TypedEncoder(in_dim, hidden, num_types)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, out_dim)

    def features(self, x: Tensor, agent_type: Tensor | None = None) -> Tensor:
        h = self.encoder(x, agent_type)
        for lin in self.hidden:
            h = F.relu(lin(h))
        return h

    def forward(self, x: Tensor, agent_type: Tensor | None = None) -> Tensor:
        return self.out(self.features(x, agent_type))


class BatchedLinear(nn.Module):
    r"""``G`` independent linear layers applied to ``G`` inputs at once: :math:`y_g = x_g W_g + b_g`,
    ``x`` ``[G, B, in] -> [G, B, out]`` with one ``baddbmm`` (no Python loop over ``g``). Each
    :math:`W_g` is initialised as ``nn.Linear`` would be (uniform in :math:`\pm 1/\sqrt{\mathrm{in}}`).

    ``detach=True`` evaluates with the weights detached: a loss then differentiates only w.r.t. the
    input (a frozen critic inside an actor's loss).
    """

    def __init__(self, groups: int, in_features: int, out_features: int):
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        return torch.baddbmm(b.unsqueeze(1), x, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, in_features={self.in_features}, out_features={self.out_features}"


def num_graphs(obs: Data | Batch, num_agents: int) -> int:
    """How many environments (graphs of ``num_agents`` nodes) ``obs`` holds."""
    n = obs.x.size(0)
    if n % num_agents:
        raise ValueError(f"{n} nodes is not a whole number of graphs of {num_agents} agents")
    return n // num_agents


# --------------------------------------------------------------------------------------------------
# Memory


def available_memory(device: torch.device | str | None = None) -> tuple[int | None, str]:
    """Free memory where the networks will live, and what was read: CUDA's free memory for a CUDA device
    (``torch.cuda.mem_get_info``), otherwise ``MemAvailable`` of ``/proc/meminfo``. ``None`` when unknown.

    ``device=None`` resolves as the trainer's ``device: auto`` does (CUDA when torch sees one)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free), f"free memory on {device}"
        except Exception:  # noqa: BLE001 - no driver: fall through to unknown
            return None, str(device)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable (/proc/meminfo)"
    except OSError:
        pass
    return None, "unknown"


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def check_memory(name: str, need: int, detail: str, device: torch.device | str | None = None, advice: str = "") -> None:
    """Raise :class:`ConfigError` with the figure when ``need`` bytes exceed
    :data:`MEMORY_FRACTION` of the free memory (the replay buffer is checked separately)."""
    avail, what = available_memory(device)
    if avail is None or need <= MEMORY_FRACTION * avail:
        return
    raise ConfigError(
        f"algo.name: '{name}' needs about {gib(need)} for its networks and one minibatch ({detail}), "
        f"but only {gib(avail)} is available ({what}){'; ' + advice if advice else ''}"
    )


TRANSIENT_COPIES = 2  # parameter-sized temporaries of the optimiser step (torch's foreach Adam/RMSprop)


def optimizer_state_factor(kind: str) -> int:
    """Floats per parameter beyond the parameter itself: gradient, optimiser moments (Adam 2, RMSprop 1),
    target copy, and :data:`TRANSIENT_COPIES` temporaries of the optimiser step. With them the estimates
    of MADDPG, MADDPG-S and QMIX came within -1 % / +14 % / +21 % of the peak resident memory measured by
    ``benchmarks/bench_algos.py`` at N = 225, B = 64 (without them, 71-85 % of it)."""
    return {"adam": 4, "rmsprop": 3}[kind] + TRANSIENT_COPIES


# --------------------------------------------------------------------------------------------------
# The learner skeleton


def make_optimizer(params: Iterable[Tensor], lr: float, kind: str = "adam") -> torch.optim.Optimizer:
    """Adam (IP paper, Table 2) or RMSprop as QMIX's paper uses it (alpha 0.99, eps 1e-5: PyMARL's)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-5)
    raise ValueError(f"unknown optimizer '{kind}'")


class BaselineAlgo(nn.Module):
    """Counters, optimisers, the gradient step and the full state shared by the baselines.

    Subclasses set ``self.optimizers`` (name -> optimiser) and ``self.grad_groups`` (name -> module
    whose gradient norm is logged as ``grad_norm/<name>`` and clipped to ``algo.max_grad_norm``).
    ``env_steps`` counts the environment steps the policy explored (calls of ``act`` with
    ``deterministic=False``, one per environment of a batch): the exploration schedules read it, with their
    step counts multiplied by ``schedule_scale`` (set by :func:`ipgnn.algos.make_algo` from
    :attr:`ipgnn.config.TrainConfig.schedule_scale`: the same fraction of every run for every method).
    """

    schedule_scale: float = 1.0

    def __init__(self, algo: AlgoConfig, num_agents: int):
        super().__init__()
        self.cfg = algo
        self.num_agents = int(num_agents)
        self.num_updates = 0
        self.env_steps = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.grad_groups: dict[str, nn.Module] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def count_steps(self, obs: Data | Batch) -> None:
        self.env_steps += num_graphs(obs, self.num_agents)

    def gradient_step(self, loss: Tensor) -> dict[str, float]:
        """Zero, backward, clip each group to ``max_grad_norm`` (norms logged before clipping), step."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.max_grad_norm or float("inf")
        norms = {
            f"grad_norm/{k}": float(nn.utils.clip_grad_norm_(m.parameters(), clip)) for k, m in self.grad_groups.items()
        }
        for opt in self.optimizers.values():
            opt.step()
        self.num_updates += 1
        return norms

    def target_due(self) -> bool:
        return self.num_updates % self.cfg.target_update_interval == 0

    @staticmethod
    def floats(terms: dict[str, Any]) -> dict[str, float]:
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}

    def full_state_dict(self) -> dict:
        return {
            "networks": self.state_dict(),
            "num_updates": self.num_updates,
            "env_steps": self.env_steps,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
        }

    def load_full_state_dict(self, state: dict) -> None:
        self.load_state_dict(state["networks"])
        self.num_updates = int(state["num_updates"])
        self.env_steps = int(state.get("env_steps", 0))
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])


class QLearningAlgo(BaselineAlgo):
    r"""What the value-based baselines (IQL, DGN, QMIX) share: the linear :math:`\epsilon` schedule over
    explored environment steps (options ``epsilon_start``, ``epsilon_end``, ``epsilon_decay_steps``),
    :math:`\epsilon`-greedy acting over valid actions, and the next state's value for the target."""

    opts: dict[str, Any]

    @property
    def epsilon(self) -> float:
        o = self.opts
        return linear_epsilon(self.env_steps, o["epsilon_start"], o["epsilon_end"], self.epsilon_decay_steps)

    @property
    def epsilon_decay_steps(self) -> int:
        """The option ``epsilon_decay_steps`` scaled to this run (``schedule_scale``), at least one step."""
        steps = self.opts["epsilon_decay_steps"]
        return steps if steps <= 0 else max(1, round(steps * self.schedule_scale))

    def act_on_q(self, q: Tensor, obs: Data | Batch, deterministic: bool) -> Tensor:
        r"""The greedy valid action of each row of ``q`` or, when exploring, an :math:`\epsilon`-greedy one
        (exploring counts the environment steps the schedule reads)."""
        mask = getattr(obs, "action_mask", None)
        if deterministic:
            return masked_argmax(q, mask)
        eps = self.epsilon
        self.count_steps(obs)
        return epsilon_greedy(q, mask, eps)

    def next_value(self, q_next_target: Tensor, q_next_online: Tensor | None, mask: Tensor | None) -> Tensor:
        r""":math:`\max_{a' \text{ valid}} \bar Q(s', a')`, or with ``double_q`` (``q_next_online`` given)
        :math:`\bar Q(s', \arg\max_{a' \text{ valid}} Q(s', a'))` (van Hasselt et al., 2016)."""
        if q_next_online is None:
            return masked_max(q_next_target, mask)
        best = masked_argmax(q_next_online, mask)
        return q_next_target.gather(-1, best.unsqueeze(-1)).squeeze(-1)


__all__ = [
    "BaselineAlgo",
    "QLearningAlgo",
    "BatchedLinear",
    "TypedMLP",
    "available_memory",
    "check_memory",
    "epsilon_greedy",
    "gib",
    "gumbel_onehot",
    "linear_epsilon",
    "make_optimizer",
    "make_target",
    "masked_argmax",
    "masked_logits",
    "masked_max",
    "masked_values",
    "num_graphs",
    "parse_options",
    "polyak_update",
    "random_valid_actions",
    "require_discrete",
]


def team_terminated(terminated: Tensor) -> Tensor:
    r"""Episode-level termination of a team value, ``[B, N] -> [B]``: :math:`D = \prod_i d_i`, 1 only when
    every agent has terminated (an agent that left earlier is reported terminated from then on). A team
    value bootstraps while any agent is still in the episode; one agent's termination does not end the
    team's return (QMIX's and PIC's team critics)."""
    return terminated.amin(1)
