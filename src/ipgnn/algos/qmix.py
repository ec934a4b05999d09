r"""QMIX: monotonic value function factorisation (Rashid et al., ICML 2018), a baseline of sec. 5.2.

Each agent has a utility :math:`Q_i(o_i, \cdot)` (one network shared by all agents, a per-type first
layer for heterogeneous agents); a mixing network combines the chosen utilities into a team value

.. math::
    Q_{tot}(\mathbf Q, s) = W_2(s)^\top\, \mathrm{ELU}\big(W_1(s)^\top \mathbf Q + b_1(s)\big) + V(s),
    \qquad W_1(s) = |\,\mathrm{hyper}_{W_1}(s)\,|,\quad W_2(s) = |\,\mathrm{hyper}_{W_2}(s)\,|

whose weights are produced by hyper-networks conditioned on the global state :math:`s` and made
non-negative by an absolute value, so :math:`\partial Q_{tot} / \partial Q_i \ge 0` for every agent
(QMIX's monotonicity constraint, sec. 4): the greedy joint action is every agent's own greedy action.
:math:`b_1` is one linear layer of :math:`s`, :math:`V(s)` two layers with a ReLU (sec. 4).

Loss (QMIX's TD loss, sec. 4), mean over the minibatch's transitions:

.. math::
    L(\theta) = \mathbb E\big[(Q_{tot}(\mathbf Q(o, a), s) - y)^2\big],\qquad
    y = R + \gamma (1 - D) \, Q_{tot}^{\bar\theta}\big(
        \big[\max_{a'_i \in \mathcal A_i(s')} \bar Q_i(o'_i, a'_i)\big]_{i=1..N}, s'\big)

(the max per agent over its valid next actions: monotonicity makes it the max of :math:`Q_{tot}`).

How QMIX's inputs are made from this package's per-agent data (documented choices):

- **global state** :math:`s` = the concatenation of all agents' observations in agent order,
  ``[N * obs_dim]`` (the tasks expose no separate state). The first hyper-network therefore maps
  ``N * obs_dim`` inputs to ``N * mixing_embed`` outputs: its size grows as :math:`N^2 \cdot
  \mathrm{obs\_dim}`, which :meth:`QMIX.check` estimates and refuses up front when it cannot fit;
- **the hyper-networks read** :math:`\hat s`, :math:`s` standardised per feature by running statistics of
  the replayed states (:class:`RunningStandardiser`, ``state_norm: running``). The states QMIX was built
  for (SMAC's) come normalised from the environment; traffic observations are raw vehicle counts (tens),
  and since :math:`W_1(s)` and :math:`W_2(s)` both grow with :math:`|s|`, :math:`Q_{tot}` grows with
  :math:`|s|^2`: on Hangzhou-16 with the raw state (``state_norm: none``) :math:`Q_{tot}` reached
  :math:`+5 \cdot 10^4` while every return is negative, gradient norms :math:`10^9`-:math:`10^{10}`, and the
  greedy policy ended above FixedTime's travel time at each of three learning rates (measured);
- **team reward** :math:`R = \sum_i r_i` (``team_reward: sum``; ``mean`` divides by the constant N);
- **termination** episode-level, :math:`D = 1` when every agent has terminated
  (:func:`~ipgnn.algos.targets.team_terminated`; a time limit still bootstraps);
- **agents are feed-forward**: QMIX's agents are GRUs over the action-observation history, which needs
  episode sequences; this package's replay holds single transitions, so the utility is an MLP of the
  current observation (two hidden layers of ``model.hidden``).

Target networks (agents and mixer) follow ``algo.tau`` / ``algo.target_update_interval``: QMIX copies
them every 200 training episodes, i.e. ``tau: 1.0`` and ``target_update_interval: 200`` gradient steps
(``configs/algos/qmix.yaml``). Exploration: :math:`\epsilon`-greedy over valid actions.

Options (``algo.options``), with defaults and sources (Rashid et al. 2018, its experimental setup, and
the PyMARL code released with it):

==========================  =======  ===============================================================
``mixing_embed``            32       QMIX: mixing network of 32 units
``hypernet_layers``         1        QMIX: each hyper-network is a single linear layer (2: a hidden
                                     layer of ``hypernet_hidden`` units, as PyMARL allows)
``hypernet_hidden``         64       PyMARL's ``hypernet_embed``
``epsilon_start``           1.0      QMIX sec. 6: ε from 1.0 ...
``epsilon_end``             0.05     ... to 0.05 ...
``epsilon_decay_steps``     50000    ... over 50k time steps
``double_q``                false    QMIX's paper: the plain max (PyMARL's config turns Double Q on)
``optimizer``               adam     app. D: Table 2's Adam for all methods (QMIX's own: rmsprop,
                                     alpha 0.99, eps 1e-5 as PyMARL)
``team_reward``             sum      :math:`R = \sum_i r_i`
``state_norm``              running  this package's: the hyper-networks read the standardised state
                                     (above); none: the raw concatenated observations
==========================  =======  ===============================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from ipgnn.algos.memory import gib
from ipgnn.algos.optim import make_optimizer, optimizer_state_factor
from ipgnn.algos.options import require_choice, require_positive
from ipgnn.algos.qlearning import EPSILON_OPTIONS, QLearningAlgo
from ipgnn.algos.targets import td_target, team_targets
from ipgnn.config import AlgoConfig, ModelConfig
from ipgnn.nn.mlp import TypedMLP
from ipgnn.replay import TransitionBatch


def _hyper(state_dim: int, out: int, layers: int, hidden: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(state_dim, out)
    return nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


class RunningStandardiser(nn.Module):
    r"""Per-feature standardisation by running statistics, :math:`\hat s = (s - \mu) / \sqrt{\sigma^2 + 10^{-8}}`,
    clipped to :math:`[-10, 10]`; :math:`\mu, \sigma^2` are the mean and variance of every row passed to
    :meth:`update` (Chan et al.'s parallel merge of batch moments). Buffers, so they are checkpointed; identity
    until the first update."""

    def __init__(self, dim: int, clip: float = 10.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        x = x.detach().to(torch.float64)
        n, mean, var = x.size(0), x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        m2 = self.var * self.count + var * n + delta.pow(2) * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mean.to(x.dtype)) / (self.var.to(x.dtype) + 1e-8).sqrt()
        return z.clamp(-self.clip, self.clip)


class QMixer(nn.Module):
    """The monotonic mixing network (see the module docstring): ``forward(q [B, N], s [B, S]) -> [B]``."""

    def __init__(
        self, num_agents: int, state_dim: int, embed: int = 32, hypernet_layers: int = 1, hypernet_hidden: int = 64
    ):
        super().__init__()
        self.n, self.embed = num_agents, embed
        self.hyper_w1 = _hyper(state_dim, num_agents * embed, hypernet_layers, hypernet_hidden)
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.hyper_w2 = _hyper(state_dim, embed, hypernet_layers, hypernet_hidden)
        self.hyper_v = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    @staticmethod
    def num_params(num_agents: int, state_dim: int, embed: int, hypernet_layers: int, hypernet_hidden: int) -> int:
        def hyper(out: int) -> int:
            if hypernet_layers == 1:
                return state_dim * out + out
            return state_dim * hypernet_hidden + hypernet_hidden + hypernet_hidden * out + out

        return (
            hyper(num_agents * embed)
            + (state_dim * embed + embed)
            + hyper(embed)
            + (state_dim * embed + embed + embed + 1)
        )

    def forward(self, q: Tensor, state: Tensor) -> Tensor:
        b = q.size(0)
        w1 = self.hyper_w1(state).abs().view(b, self.n, self.embed)
        b1 = self.hyper_b1(state).view(b, 1, self.embed)
        hidden = F.elu(torch.bmm(q.view(b, 1, self.n), w1) + b1)  # [B, 1, E]
        w2 = self.hyper_w2(state).abs().view(b, self.embed, 1)
        v = self.hyper_v(state).view(b, 1, 1)
        return (torch.bmm(hidden, w2) + v).view(b)


class QMIX(QLearningAlgo):
    """QMIX with feed-forward agents (see the module docstring)."""

    NAME = "qmix"
    has_centralized_critic: ClassVar[bool] = True  # the mixer reads the global state
    MEMORY_ADVICE: ClassVar[str] = (
        "algo.options.hypernet_layers: 2 makes the first hyper-network "
        "N*obs_dim x hypernet_hidden + hypernet_hidden x N*mixing_embed instead"
    )
    OPTIONS: ClassVar[dict[str, tuple[Any, Any]]] = {
        "mixing_embed": (int, 32),
        "hypernet_layers": (int, 1),
        "hypernet_hidden": (int, 64),
        **EPSILON_OPTIONS,
        "double_q": (bool, False),
        "optimizer": (str, "adam"),
        "team_reward": (str, "sum"),
        "state_norm": (str, "running"),
    }

    def __init__(self, spec: Any, model: ModelConfig, algo: AlgoConfig, num_agents: int):
        super().__init__(spec, algo, num_agents)
        o = self.opts
        self.agent = TypedMLP(spec.obs_dim, model.hidden, spec.action_dim, 2, spec.num_agent_types)
        self.mixer = QMixer(
            num_agents, num_agents * spec.obs_dim, o["mixing_embed"], o["hypernet_layers"], o["hypernet_hidden"]
        )
        self.add_target("agent")
        self.add_target("mixer")
        # the hyper-networks' view of s: standardised by running statistics of the replayed states, or raw
        self.state_norm = RunningStandardiser(num_agents * spec.obs_dim) if o["state_norm"] == "running" else None
        params = list(self.agent.parameters()) + list(self.mixer.parameters())
        self.optimizers = {"q": make_optimizer(params, algo.lr, o["optimizer"])}
        self.grad_groups = {"agent": self.agent, "mixer": self.mixer}

    @classmethod
    def memory_bytes(
        cls, spec: Any, model: ModelConfig, opts: dict[str, Any], num_agents: int, batch_size: int
    ) -> tuple[int, str]:
        """Parameters (with gradients, optimiser state, target copies and the optimiser step's
        temporaries) and the minibatch's largest activations, in bytes, with a breakdown."""
        n, h, s = num_agents, model.hidden, num_agents * spec.obs_dim
        mixer = QMixer.num_params(n, s, opts["mixing_embed"], opts["hypernet_layers"], opts["hypernet_hidden"])
        agent = spec.obs_dim * h * spec.num_agent_types + h * h + h * spec.action_dim + 3 * h + spec.action_dim
        params = 4 * (mixer + agent) * (1 + optimizer_state_factor(opts["optimizer"]))
        # per transition: state and next state, hyper-network outputs (W1 dominates) for s and s',
        # agent activations for s and s' (online and target)
        per = 2 * s + 3 * n * opts["mixing_embed"] * 2 + 4 * n * (2 * h + spec.action_dim)
        acts = 4 * batch_size * per
        detail = (
            f"N={n}: mixer hyper-networks {mixer / 1e6:.1f} M parameters (state of N*obs_dim={s} inputs), "
            f"x{1 + optimizer_state_factor(opts['optimizer'])} with gradients, {opts['optimizer']} state, "
            f"target and the optimiser step's temporaries = {gib(params)}; activations at batch "
            f"{batch_size}: {gib(acts)}"
        )
        return params + acts, detail

    @classmethod
    def check_options(cls, opts: dict[str, Any], model: ModelConfig) -> None:
        super().check_options(opts, model)
        require_positive(opts, ["mixing_embed", "hypernet_layers", "hypernet_hidden"], cls.NAME)
        for key, valid in (
            ("hypernet_layers", (1, 2)),
            ("optimizer", ("adam", "rmsprop")),
            ("team_reward", ("sum", "mean")),
            ("state_norm", ("running", "none")),
        ):
            require_choice(opts, key, valid, cls.NAME)

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Data | Batch, deterministic: bool = False) -> Tensor:
        """Each agent's greedy valid action under its own utility (monotonic mixing makes that the joint
        greedy action), or :math:`\\epsilon`-greedy when exploring."""
        return self.act_on_q(self.agent(obs.x, getattr(obs, "agent_type", None)), obs, deterministic)

    def team(self, batch: TransitionBatch) -> tuple[int, Tensor, Tensor, Tensor, Tensor]:
        """``B``, states ``s``, ``s'`` ``[B, N*obs_dim]``, team reward ``[B]`` and termination ``[B]``."""
        n = self.num_agents
        b = batch.obs.x.size(0) // n
        state = batch.obs.x.reshape(b, -1)
        next_state = batch.next_obs.x.reshape(b, -1)
        reward, done = team_targets(batch.reward.view(b, n), batch.terminated.view(b, n), self.opts["team_reward"])
        return b, state, next_state, reward, done

    @torch.no_grad()
    def target(self, batch: TransitionBatch) -> Tensor:
        """:math:`y = R + \\gamma (1 - D) Q^{target}_{tot}(\\max_{a'} \\bar Q_i(o'_i, a'), s')` ``[B]``."""
        b, _, next_state, reward, done = self.team(batch)
        nxt = batch.next_obs
        types, mask = getattr(nxt, "agent_type", None), getattr(nxt, "action_mask", None)
        v_next = self.next_value(
            self.agent_target(nxt.x, types), self.agent(nxt.x, types) if self.opts["double_q"] else None, mask
        )
        q_tot_next = self.mixer_target(v_next.view(b, -1), self.mixer_state(next_state))
        return td_target(reward, done, q_tot_next, self.cfg.gamma)

    def losses(self, batch: TransitionBatch) -> dict[str, Tensor]:
        r"""QMIX's TD loss :math:`L(\theta) = \mathbb E[(Q_{tot}(\mathbf Q(o, a), s) - y)^2]` (sec. 4)."""
        b, state, _, _, _ = self.team(batch)
        q = self.agent(batch.obs.x, getattr(batch.obs, "agent_type", None))
        q_sa = q.gather(-1, batch.action.long().unsqueeze(-1)).view(b, -1)
        q_tot = self.mixer(q_sa, self.mixer_state(state))
        y = self.target(batch)
        return {
            "q_loss": (q_tot - y).pow(2).mean(),
            "q_tot": q_tot.detach().mean(),
            "q_target": y.mean(),
            "q_agent": q_sa.detach().mean(),
        }

    def mixer_state(self, state: Tensor) -> Tensor:
        """The state the hyper-networks read (``state_norm``)."""
        return state if self.state_norm is None else self.state_norm(state)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """:meth:`QLearningAlgo.update`, the running state statistics first updated with this minibatch's
        states (before they are read)."""
        if self.state_norm is not None:
            self.state_norm.update(self.team(batch)[1])
        return super().update(batch)
