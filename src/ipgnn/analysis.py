r"""Looking inside a trained intention propagation policy: the rounds :math:`\tilde\mu^m`, their fixed
point, the attention, and (for traffic) the phases chosen over the map.

The functions behind ``notebooks/explore_embeddings.ipynb``; every one works on any checkpoint written
by ``ipgnn-train`` with ``algo.name: ipsac`` (the traffic figures need ``env.task: traffic``), loaded
with :func:`ipgnn.runs.load_run` (``cfg, env, algo = load_run(path)``).

Definitions (sec. 4.2, eq. 6; app. B.2):

- **rounds**: :math:`\tilde\mu_i^0 = \mathrm{ReLU}(W_1 h_i)` is agent ``i``'s independent decision;
  round ``m = 1..M`` applies the one shared operator :math:`\tilde{\mathcal T}` (attention over the
  neighbours' :math:`\tilde\mu_j^{m-1}`). :func:`propagation_trace` returns every
  :math:`\tilde\mu^m` ``[N, H]``, the attention :math:`\alpha_{ij}^{m}` of every round with its
  ``edge_index`` (column ``(j, i)``: ``j`` sends to ``i``; for each receiving ``i`` the weights over
  its in-edges sum to 1), and the action finally chosen. ``extra_rounds`` keeps applying the *same*
  operator past the trained ``M`` (the chosen actions still come from the trained ``M`` rounds), to
  see whether the iteration settles.
- **fixed-point diagnostic**: mean-field inference iterates :math:`\tilde\mu \leftarrow
  \tilde{\mathcal T}\tilde\mu` towards a fixed point; :math:`d_i^m = \lVert \tilde\mu_i^m -
  \tilde\mu_i^{m-1} \rVert_2` (:func:`round_distances`), and its mean and spread over agents and
  states per round (:func:`fixed_point_stats`). Shrinking :math:`d^m` means the rounds converge.
- **projection**: one 2-D PCA fitted to the intentions of *all* rounds together
  (:func:`fit_projection`, an SVD of the centred matrix), so positions are comparable across rounds.

Figures (each function returns a ``matplotlib.figure.Figure``): :func:`plot_intentions` (a),
:func:`plot_round_distances` (b), :func:`plot_attention` (c), :func:`plot_phase_maps` and
:func:`plot_phase_timeline` (d). For one intersection, :func:`approach_queues` reads the queue on each
incoming approach from the observations, next to the phases chosen (the notebook's cell (e)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from ipgnn.graphs import expand_hops
from ipgnn.nn.propagation import IntentionPropagationNetwork

GraphObs = Data | Batch


def policy_network(algo: Any) -> IntentionPropagationNetwork:
    """The intention propagation network of a learner (``algo.policy``), or the network itself."""
    net = algo if isinstance(algo, IntentionPropagationNetwork) else getattr(algo, "policy", None)
    if not isinstance(net, IntentionPropagationNetwork):
        name = type(algo).__name__
        raise TypeError(
            f"{name} has no intention propagation network (algo.policy); the embedding analysis needs "
            "a checkpoint trained with algo.name: ipsac"
        )
    return net


def traffic_scenario(env: Any) -> Any:
    """The :class:`~ipgnn.traffic.scenario.Scenario` of a traffic task's environment, else ``None``."""
    inner = getattr(env, "env", None)
    return getattr(inner, "scenario", None) if inner is not None and hasattr(inner, "engine_factory") else None


def select_graph(obs: GraphObs, k: int = 0) -> Data:
    """Graph ``k`` of a batch (a batched task's step) as a :class:`Data` with local node indices;
    a :class:`Data` is returned unchanged."""
    batch = getattr(obs, "batch", None)
    if batch is None:
        if k != 0:
            raise IndexError(f"graph {k} of a single graph")
        return obs
    nodes = (batch == k).nonzero().flatten()
    if nodes.numel() == 0:
        raise IndexError(f"graph {k} not in this batch of {int(batch.max()) + 1}")
    lo, n = int(nodes[0]), nodes.numel()
    ei = obs.edge_index
    keep = (ei[1] >= lo) & (ei[1] < lo + n)
    out = Data(x=obs.x[lo : lo + n], edge_index=ei[:, keep] - lo)
    for key in ("pos", "action_mask", "agent_type"):
        val = getattr(obs, key, None)
        if val is not None:
            setattr(out, key, val[lo : lo + n])
    return out


# ------------------------------------------------------------------------------------------------
# rollouts


@dataclass
class Rollout:
    """One episode (or its first ``steps`` decisions): the state each joint action was chosen in."""

    observations: list[GraphObs]
    actions: list[Tensor]
    rewards: list[Tensor]
    episode: dict[str, float] = field(default_factory=dict)  # episode metrics if it reached the end


@torch.no_grad()
def rollout(env: Any, algo: Any, steps: int | None = None, seed: int | None = 0, deterministic: bool = True) -> Rollout:
    """Play one episode with the learner's policy (greedy by default; ``deterministic=False`` samples
    :math:`a_i \\sim q_i`), stopping after ``steps`` decisions if given."""
    obs = env.reset(seed=seed)
    out = Rollout([], [], [])
    while steps is None or len(out.actions) < steps:
        action = algo.act(obs, deterministic=deterministic)
        res = env.step(action)
        out.observations.append(obs)
        out.actions.append(action.cpu())
        out.rewards.append(res.reward)
        obs = res.obs
        if res.done:
            out.episode = dict(res.episode or {})
            break
    return out


# ------------------------------------------------------------------------------------------------
# the rounds


@dataclass
class PropagationTrace:
    r"""Every round of one forward pass of :math:`\Lambda_\theta`.

    Attributes:
        intentions: ``[R + 1, N, H]``: ``intentions[m]`` is :math:`\tilde\mu^m`; ``R = M + extra``.
        attention: ``R`` pairs ``(edge_index [2, E], alpha [E, heads])``, one per round ``1..R``
            (PyG's ``return_attention_weights`` format; ``edge_index`` has the ``model.hops`` expansion).
        actions: ``[N]`` (discrete) or ``[N, D]``: the joint action of the trained ``M`` rounds.
        probs: ``[N, A]`` :math:`q_i` for discrete actions, else ``None``.
        trained_rounds: ``M``.
        pos: ``[N, d]`` agent positions when the observation has them.
        batch: ``[N]`` graph index of every node when ``obs`` was a batch.
    """

    intentions: Tensor
    attention: list[tuple[Tensor, Tensor]]
    actions: Tensor
    probs: Tensor | None
    trained_rounds: int
    pos: Tensor | None = None
    batch: Tensor | None = None

    @property
    def num_rounds(self) -> int:
        """``R``: rounds traced (not counting :math:`\\tilde\\mu^0`)."""
        return self.intentions.size(0) - 1

    @property
    def edge_index(self) -> Tensor:
        return self.attention[0][0] if self.attention else torch.empty(2, 0, dtype=torch.long)


@torch.no_grad()
def propagation_trace(algo: Any, obs: GraphObs, deterministic: bool = True, extra_rounds: int = 0) -> PropagationTrace:
    r"""Run the policy on ``obs`` (a step's ``Data``, or a ``Batch`` of several states) and keep every
    round :math:`\tilde\mu^0..\tilde\mu^M`, the attention of each round and the chosen actions (the mode
    of each :math:`q_i`, or a sample when ``deterministic=False``).

    ``extra_rounds > 0`` applies the same trained operator :math:`\tilde{\mathcal T}` that many more
    times after round ``M`` (not used by the readout: the actions are unchanged)."""
    net = policy_network(algo)
    device = next(net.parameters()).device
    obs = obs.to(device)
    out = net(obs, return_intentions=True, return_attention=True)
    mus = list(out.intentions)
    attention = [(ei.cpu(), a.cpu()) for ei, a in out.attention]
    if extra_rounds > 0:
        edge_index = expand_hops(obs.edge_index, obs.x.size(0), net.hops)
        h = net.encoder(obs.x, getattr(obs, "agent_type", None))
        mu = mus[-1]
        for _ in range(extra_rounds):
            mu, (ei, alpha) = net.conv(mu, h, edge_index, return_attention_weights=True)
            mus.append(mu)
            attention.append((ei.cpu(), alpha.cpu()))
    dist = out.dist
    actions = dist.greedy() if deterministic else dist.sample()
    probs = dist.probs.cpu() if net.discrete else None
    pos = getattr(obs, "pos", None)
    batch = getattr(obs, "batch", None)
    return PropagationTrace(
        torch.stack(mus).cpu(),
        attention,
        actions.cpu(),
        probs,
        net.rounds,
        None if pos is None else pos.cpu(),
        None if batch is None else batch.cpu(),
    )


def round_distances(intentions: Tensor | PropagationTrace, relative: bool = False) -> Tensor:
    r""":math:`d_i^m = \lVert \tilde\mu_i^m - \tilde\mu_i^{m-1} \rVert_2` for ``m = 1..R``: ``[R, N]``.

    ``relative=True`` divides by :math:`\lVert \tilde\mu_i^{m-1} \rVert_2` (0 where that is 0)."""
    mu = intentions.intentions if isinstance(intentions, PropagationTrace) else intentions
    d = (mu[1:] - mu[:-1]).norm(dim=-1)
    if relative:
        base = mu[:-1].norm(dim=-1)
        d = torch.where(base > 0, d / base.clamp_min(1e-12), torch.zeros_like(d))
    return d


@dataclass
class FixedPointStats:
    r"""Statistics of :math:`d^m` per round ``m = 1..R``, pooled over the agents of every state.

    ``mean``, ``std``, ``q10``, ``median``, ``q90``, ``max``: over all (state, agent) pairs, ``[R]``;
    ``state_means``: ``[S, R]``, the mean over agents in each state (its spread across states is
    ``state_means.std(0)``)."""

    rounds: Tensor
    mean: Tensor
    std: Tensor
    q10: Tensor
    median: Tensor
    q90: Tensor
    max: Tensor
    state_means: Tensor
    trained_rounds: int
    relative: bool = False

    def rows(self) -> list[dict[str, float]]:
        """One dict per round (for printing as a table)."""
        spread = self.state_means.std(0) if self.state_means.size(0) > 1 else torch.zeros_like(self.mean)
        return [
            {
                "round": int(m),
                "mean": float(a),
                "std_agents": float(s),
                "std_states": float(ss),
                "q10": float(lo),
                "median": float(md),
                "q90": float(hi),
                "max": float(mx),
                "trained": bool(m <= self.trained_rounds),
            }
            for m, a, s, ss, lo, md, hi, mx in zip(
                self.rounds, self.mean, self.std, spread, self.q10, self.median, self.q90, self.max
            )
        ]


def fixed_point_stats(traces: Sequence[PropagationTrace] | PropagationTrace, relative: bool = False) -> FixedPointStats:
    """The fixed-point diagnostic over one or several traces (states), see :class:`FixedPointStats`.
    A trace of a batch counts each of its graphs as one state."""
    if isinstance(traces, PropagationTrace):
        traces = [traces]
    if not traces:
        raise ValueError("fixed_point_stats needs at least one trace")
    rounds = {t.num_rounds for t in traces}
    if len(rounds) != 1:
        raise ValueError(f"traces have different numbers of rounds {sorted(rounds)}")
    per_agent, state_means = [], []
    for t in traces:
        d = round_distances(t, relative)  # [R, N]
        per_agent.append(d)
        if t.batch is None:
            state_means.append(d.mean(1, keepdim=True).T)
        else:
            g = int(t.batch.max()) + 1
            sums = torch.zeros(d.size(0), g).index_add_(1, t.batch, d)
            counts = torch.bincount(t.batch, minlength=g).clamp_min(1)
            state_means.append((sums / counts).T)
    d = torch.cat(per_agent, 1)  # [R, total agents]
    q = torch.quantile(d, torch.tensor([0.1, 0.5, 0.9]), dim=1)
    r = d.size(0)
    return FixedPointStats(
        torch.arange(1, r + 1),
        d.mean(1),
        d.std(1) if d.size(1) > 1 else torch.zeros(r),
        q[0],
        q[1],
        q[2],
        d.max(1).values,
        torch.cat(state_means, 0),
        traces[0].trained_rounds,
        relative,
    )


# ------------------------------------------------------------------------------------------------
# projection


@dataclass
class Projection:
    """An affine map to ``dim`` principal axes: ``(x - mean) @ components``."""

    mean: Tensor  # [H]
    components: Tensor  # [H, dim], orthonormal columns
    explained: Tensor  # [dim] fraction of the total variance along each axis

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.components


def fit_projection(x: Tensor | PropagationTrace | Sequence[PropagationTrace], dim: int = 2) -> Projection:
    """PCA of ``x`` ``[..., H]`` (all leading dimensions pooled: every round of every agent), by an SVD
    of the centred matrix. Deterministic: each axis' sign makes its largest loading positive. Missing
    axes (``H < dim`` or rank-deficient data) are zero columns with 0 explained variance."""
    if isinstance(x, PropagationTrace):
        x = x.intentions
    elif not torch.is_tensor(x):
        x = torch.cat([t.intentions.reshape(-1, t.intentions.size(-1)) for t in x], 0)
    flat = x.reshape(-1, x.size(-1)).double()
    mean = flat.mean(0)
    centred = flat - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    k = min(dim, vh.size(0))
    comps = torch.zeros(flat.size(1), dim, dtype=torch.float64)
    comps[:, :k] = vh[:k].T
    idx = comps.abs().argmax(0)
    signs = torch.sign(comps[idx, torch.arange(dim)])
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    var = s.pow(2)
    total = var.sum()
    explained = torch.zeros(dim, dtype=torch.float64)
    if total > 0:
        explained[:k] = var[:k] / total
    return Projection(mean.float(), comps.float(), explained.float())


# ------------------------------------------------------------------------------------------------
# plotting helpers


def _plt():
    """pyplot, with whatever backend is active (inline in a notebook; Agg when headless)."""
    import matplotlib.pyplot as plt

    return plt


def _action_colours(actions: Tensor, num_actions: int):
    """Colours for discrete actions (tab10/tab20), or a viridis map of a continuous action's first
    component; returns ``(colours [N, 4], legend handles)``."""
    plt = _plt()
    from matplotlib.lines import Line2D

    if actions.dim() == 1:
        cmap = plt.get_cmap("tab10" if num_actions <= 10 else "tab20")
        cols = cmap(actions.numpy() % cmap.N)
        present = sorted(set(actions.tolist()))
        handles = [Line2D([], [], marker="o", ls="", color=cmap(a % cmap.N), label=f"action {a}") for a in present]
        return cols, handles
    val = actions[:, 0].numpy()
    cmap = plt.get_cmap("viridis")
    return cmap((np.clip(val, -1, 1) + 1) / 2), []


def draw_road_map(ax: Any, scenario: Any, color: str = "0.75", lw: float = 0.8) -> None:
    """Roads of a traffic scenario as thin grey lines (their polylines, virtual boundary ends included)."""
    from matplotlib.collections import LineCollection

    segs = [np.asarray(r.points, dtype=float) for r in scenario.roads.values()]
    ax.add_collection(LineCollection(segs, colors=color, linewidths=lw, zorder=0))
    pts = np.concatenate(segs, 0)
    pad = 0.05 * max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0)
    ax.set_xlim(pts[:, 0].min() - pad, pts[:, 0].max() + pad)
    ax.set_ylim(pts[:, 1].min() - pad, pts[:, 1].max() + pad)
    ax.set_aspect("equal")


def _positions(trace: PropagationTrace, scenario: Any, pos: Tensor | None) -> np.ndarray:
    if pos is not None:
        return np.asarray(pos, dtype=float)
    if scenario is not None:
        return scenario.positions().numpy().astype(float)
    if trace.pos is not None:
        return trace.pos.numpy().astype(float)
    raise ValueError("no agent positions: pass pos=[N, 2] (or scenario= for traffic); this observation has no .pos")


def _graph_nodes(trace: PropagationTrace, graph: int) -> slice:
    if trace.batch is None:
        return slice(0, trace.intentions.size(1))
    nodes = (trace.batch == graph).nonzero().flatten()
    return slice(int(nodes[0]), int(nodes[-1]) + 1)


# ------------------------------------------------------------------------------------------------
# (a) intentions per round


def plot_intentions(
    trace: PropagationTrace, projection: Projection | None = None, graph: int = 0, num_actions: int | None = None
) -> Any:
    r"""(a) :math:`\tilde\mu^m` of every agent at each round ``m``, projected to 2-D by one PCA shared by
    all rounds, coloured by the action finally chosen; the last panel joins each agent's rounds
    :math:`\tilde\mu^0 \to \dots \to \tilde\mu^R` (a dot at the end)."""
    plt = _plt()
    sl = _graph_nodes(trace, graph)
    mus = trace.intentions[:, sl]
    proj = projection or fit_projection(mus)
    xy = proj(mus).numpy()  # [R+1, N, 2]
    actions = trace.actions[sl]
    n_act = num_actions or (trace.probs.size(-1) if trace.probs is not None else 1)
    colours, handles = _action_colours(actions, n_act)
    panels = trace.num_rounds + 2
    ncols = min(panels, 4)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.6 * ncols, 3.4 * nrows),
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    for ax in axes.flat[panels:]:
        ax.axis("off")
    ev = proj.explained.tolist()
    for m in range(trace.num_rounds + 1):
        ax = axes.flat[m]
        ax.scatter(xy[m, :, 0], xy[m, :, 1], c=colours, s=22, edgecolors="k", linewidths=0.3)
        extra = " (extra)" if m > trace.trained_rounds else ""
        ax.set_title(rf"round m = {m}{extra}: $\tilde\mu^{{{m}}}$")
    ax = axes.flat[trace.num_rounds + 1]
    for i in range(xy.shape[1]):
        ax.plot(xy[:, i, 0], xy[:, i, 1], "-", color=colours[i], lw=0.8, alpha=0.7)
    ax.scatter(xy[-1, :, 0], xy[-1, :, 1], c=colours, s=22, edgecolors="k", linewidths=0.3)
    if xy.shape[1] <= 30:  # few agents: name them
        for i in range(xy.shape[1]):
            ax.annotate(str(i), xy[-1, i], fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    ax.set_title("each agent's path over the rounds")
    for ax in axes[-1]:
        ax.set_xlabel(f"PC 1 ({100 * ev[0]:.0f} % var.)")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"PC 2 ({100 * ev[1]:.0f} % var.)")
    if handles:
        fig.legend(handles=handles, loc="outside right upper", title="chosen action", fontsize="small")
    fig.suptitle(f"Intentions of {xy.shape[1]} agents per propagation round (one PCA for all rounds)")
    return fig


# ------------------------------------------------------------------------------------------------
# (b) fixed point


def plot_round_distances(
    stats: FixedPointStats | Sequence[PropagationTrace] | PropagationTrace, relative: bool = False
) -> Any:
    r"""(b) :math:`\lVert \tilde\mu_i^m - \tilde\mu_i^{m-1} \rVert` against ``m``: the mean over agents
    and states (line), its 10-90 % band over agents, the maximum (dashed), and each state's agent
    mean (thin lines). A curve going down means the rounds approach the mean-field fixed point."""
    plt = _plt()
    if not isinstance(stats, FixedPointStats):
        stats = fixed_point_stats(stats, relative)
    m = stats.rounds.numpy()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for row in stats.state_means.numpy():
        ax.plot(m, row, "-", color="0.7", lw=0.6, alpha=0.6)
    ax.fill_between(m, stats.q10.numpy(), stats.q90.numpy(), color="C0", alpha=0.25, label="10-90 % of agents")
    ax.plot(m, stats.mean.numpy(), "o-", color="C0", lw=2, label=f"mean ({stats.state_means.size(0)} states)")
    ax.plot(m, stats.max.numpy(), "--", color="C3", lw=1, label="max over agents")
    if stats.trained_rounds < len(m):
        ax.axvline(stats.trained_rounds + 0.5, color="k", ls=":", lw=1)
        ax.text(stats.trained_rounds + 0.55, ax.get_ylim()[1], "extra rounds", va="top", fontsize="small")
    ax.set_xticks(m)
    ax.set_xlabel("round m")
    what = (
        r"$\|\tilde\mu^m_i - \tilde\mu^{m-1}_i\| \,/\, \|\tilde\mu^{m-1}_i\|$"
        if stats.relative
        else r"$\|\tilde\mu^m_i - \tilde\mu^{m-1}_i\|_2$"
    )
    ax.set_ylabel(what)
    ax.set_title("How far each round moves the intentions (fixed-point diagnostic)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return fig


# ------------------------------------------------------------------------------------------------
# (c) attention


def plot_attention(
    trace: PropagationTrace,
    scenario: Any = None,
    pos: Tensor | None = None,
    rounds: Sequence[int] | None = None,
    graph: int = 0,
    num_actions: int | None = None,
) -> Any:
    r"""(c) The attention :math:`\alpha_{ij}^m` of each round on the agents' positions (intersections at
    their scenario coordinates over the road map, or particle positions ``obs.pos``).

    Every directed edge ``j -> i`` is drawn as the *half* of the segment next to the receiver ``i``,
    pointing towards ``j``; its width, opacity and colour grow with :math:`\alpha_{ij}` (averaged over
    heads), so the half-edges around an agent show how it splits its attention (they sum to 1).
    Agents are coloured by their chosen action. ``rounds`` (1-based) defaults to the trained rounds
    ``1..M``."""
    plt = _plt()
    from matplotlib.collections import LineCollection

    if not trace.attention:
        raise ValueError("this policy has no propagation rounds (model.rounds = 0): no attention to draw")
    sl = _graph_nodes(trace, graph)
    lo, hi = sl.start, sl.stop
    xy = _positions(trace, scenario, pos)
    if xy.shape[0] != hi - lo:
        xy = xy[lo:hi] if xy.shape[0] >= hi else xy
    xy = xy[:, :2]
    if rounds is None:
        rounds = range(1, (trace.trained_rounds or trace.num_rounds) + 1)
    rounds = list(rounds)
    actions = trace.actions[sl]
    n_act = num_actions or (trace.probs.size(-1) if trace.probs is not None else 1)
    colours, handles = _action_colours(actions, n_act)
    cmap = plt.get_cmap("plasma_r")
    fig, axes = plt.subplots(1, len(rounds), figsize=(4.6 * len(rounds), 4.4), squeeze=False, constrained_layout=True)
    for ax, m in zip(axes[0], rounds):
        ei, alpha = trace.attention[m - 1]
        keep = (ei[1] >= lo) & (ei[1] < hi)
        src, dst = (ei[0, keep] - lo).numpy(), (ei[1, keep] - lo).numpy()
        w = alpha[keep].mean(-1).numpy() if alpha.dim() > 1 else alpha[keep].numpy()
        if scenario is not None:
            draw_road_map(ax, scenario)
        start = xy[dst]
        end = xy[dst] + 0.5 * (xy[src] - xy[dst])
        order = np.argsort(w)  # strongest on top
        segs = np.stack([start, end], 1)[order]
        cols = cmap(np.clip(w[order], 0, 1))
        cols[:, 3] = 0.15 + 0.85 * np.clip(w[order], 0, 1)
        ax.add_collection(LineCollection(segs, colors=cols, linewidths=0.5 + 5.0 * w[order], capstyle="butt", zorder=1))
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=30, edgecolors="k", linewidths=0.4, zorder=2)
        if scenario is None:
            pad = 0.1 * max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-3)
            ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
            ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
            ax.set_aspect("equal")
        ax.set_title(f"round m = {m}" + (" (extra)" if m > trace.trained_rounds else ""))
        ax.set_xlabel("x (m)" if scenario is not None else "x")
        ax.set_ylabel("y (m)" if scenario is not None else "y")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes[0].tolist(), shrink=0.8, label=r"attention $\alpha_{ij}$ (half-edge at receiver i)")
    if handles:
        axes[0, 0].legend(handles=handles, fontsize="x-small", loc="best", title="chosen action")
    fig.suptitle(
        "Attention over neighbours' intentions, per round"
        + (" on the road map" if scenario is not None else " at the agents' positions")
    )
    return fig


# ------------------------------------------------------------------------------------------------
# (d) phases over the map


def _heading(points: Sequence[tuple[float, float]]) -> str:
    (x0, y0), (x1, y1) = points[-2], points[-1]
    ang = np.degrees(np.arctan2(y1 - y0, x1 - x0)) % 360
    return ["EB", "NB", "WB", "SB"][int(((ang + 45) % 360) // 90)]


def describe_phase(scenario: Any, agent: int, action: int) -> str:
    """A readable name of action ``action`` of agent ``agent``: the movements it turns green, as
    travel direction of the approach and kind (e.g. ``"NB straight, SB straight"``), leaving out those
    green in every action phase (unsignalised right turns)."""
    inter = scenario.intersections[agent]
    phases = [set(inter.phases[p]) for p in inter.action_phases]
    always = set.intersection(*phases) if phases else set()
    kinds = {"go_straight": "straight", "turn_left": "left", "turn_right": "right"}
    names = []
    for k in sorted(phases[action] - always):
        link = inter.road_links[k]
        names.append(f"{_heading(scenario.roads[link.start_road].points)} {kinds.get(link.kind, link.kind)}")
    return ", ".join(names) or "no signalised movement"


def phase_labels(scenario: Any) -> list[str]:
    """Legend labels per action index: the movement names when every intersection that has the action
    names it the same way (regular grids), else ``"phase k"``."""
    n = max(len(a.action_phases) for a in scenario.intersections)
    labels = []
    for k in range(n):
        names = {
            describe_phase(scenario, i, k) for i, a in enumerate(scenario.intersections) if k < len(a.action_phases)
        }
        labels.append(f"{k}: {names.pop()}" if len(names) == 1 else f"phase {k}")
    return labels


def plot_phase_maps(
    scenario: Any,
    actions: Sequence[Tensor],
    steps: Sequence[int] | None = None,
    max_panels: int = 8,
    action_interval: float | None = None,
) -> Any:
    """(d) The phase chosen by every intersection, on the road map, at several decision steps of an
    episode (small multiples; colour = phase index, the same in every panel).

    Args:
        scenario: the traffic scenario.
        actions: ``[N]`` joint actions per decision (e.g. ``rollout(...).actions``).
        steps: which decisions to draw (default: up to ``max_panels`` evenly spaced).
        action_interval: seconds per decision, to label panels with simulated time.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    if not len(actions):
        raise ValueError("no actions to draw")
    if steps is None:
        steps = sorted(set(np.linspace(0, len(actions) - 1, min(max_panels, len(actions))).round().astype(int)))
    labels = phase_labels(scenario)
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    pos = scenario.positions().numpy()
    ncols = min(4, len(steps))
    nrows = -(-len(steps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(steps) :]:
        ax.axis("off")
    for ax, t in zip(axes.flat, steps):
        draw_road_map(ax, scenario)
        a = actions[t].numpy()
        ax.scatter(
            pos[:, 0],
            pos[:, 1],
            c=cmap(a % cmap.N),
            s=max(12.0, 900.0 / len(pos)),
            marker="s",
            edgecolors="k",
            linewidths=0.4,
            zorder=2,
        )
        when = f", t = {t * action_interval:.0f} s" if action_interval else ""
        ax.set_title(f"decision {t}{when}", fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    for ax in axes[-1]:
        ax.set_xlabel("x")
    handles = [Line2D([], [], marker="s", ls="", color=cmap(k % cmap.N), label=l) for k, l in enumerate(labels)]
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(4, len(labels)), fontsize="small", title="chosen phase"
    )
    fig.suptitle("Phase chosen at every intersection through an episode (greedy policy)")
    return fig


def plot_phase_timeline(scenario: Any, actions: Sequence[Tensor], action_interval: float | None = None) -> Any:
    """(d, compact) The chosen phase of every intersection (rows) at every decision (columns)."""
    plt = _plt()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    labels = phase_labels(scenario)
    grid = torch.stack([a.long() for a in actions], 1).numpy()  # [N, T]
    base = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    cmap = ListedColormap([base(k % base.N) for k in range(len(labels))])
    fig, ax = plt.subplots(
        figsize=(min(14, 3 + 0.08 * grid.shape[1] + 2), min(12, 1.5 + 0.12 * grid.shape[0] + 1)),
        constrained_layout=True,
    )
    im = ax.imshow(
        grid,
        aspect="auto",
        interpolation="nearest",
        cmap=cmap,
        norm=BoundaryNorm(np.arange(len(labels) + 1) - 0.5, len(labels)),
    )
    cb = fig.colorbar(im, ax=ax, ticks=range(len(labels)))
    cb.ax.set_yticklabels(labels, fontsize="small")
    ax.set_xlabel("decision step" + (f" ({action_interval:g} s each)" if action_interval else ""))
    ax.set_ylabel("intersection (agent index)")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Chosen phase per intersection through the episode")
    return fig


# ------------------------------------------------------------------------------------------------
# (e) one intersection: queues per approach


def approach_queues(env: Any, observations: Sequence[GraphObs]) -> tuple[np.ndarray, list[list[str]]]:
    """The queue on every incoming approach of every intersection, in each state of an episode (e.g.
    ``rollout(...).observations``: the states the phases were chosen in), read from the observations'
    ``waiting`` block (halted vehicles per incoming lane, :mod:`ipgnn.traffic.simulator_env`); no engine call.

    An *approach* is one incoming road: its queue is the sum over the road's lanes.

    Returns:
        ``(queues, names)``: ``queues [T, N, A]`` float, ``queues[t, i, k]`` the halted vehicles on
        approach ``k`` of intersection ``i`` in ``observations[t]`` (``A`` the most approaches of any
        intersection; 0 for ``k >= len(names[i])``); ``names[i][k]`` its direction of travel, as in
        :func:`describe_phase`, and its road id (``"SB road_2_3_3"``).

    Raises:
        ValueError: not a traffic environment, or its observations have no ``waiting`` feature.
    """
    scenario = traffic_scenario(env)
    if scenario is None:
        raise ValueError("approach_queues needs a traffic environment (env.task: traffic)")
    raw = env.env
    if "waiting" not in raw.features:
        raise ValueError(
            f"the observations hold the features {list(raw.features)}, without 'waiting' (halted vehicles "
            "per incoming lane), which the approach queues are read from: train with "
            "env.options.features including 'waiting' (the default)"
        )
    # the observation's blocks, always in FEATURES' order: phase, count, waiting, ... (TrafficSignalEnv.obs_dim)
    start = raw.max_phases * ("phase" in raw.features) + raw.max_lanes * ("count" in raw.features)
    roads = [list(dict.fromkeys(r for r, _ in a.incoming_lanes)) for a in scenario.intersections]
    width = max(map(len, roads))
    slot = np.full((scenario.num_agents, raw.max_lanes), width, np.int64)  # padded lanes -> a dropped slot
    for i, a in enumerate(scenario.intersections):  # once per call, not per state
        slot[i, : len(a.incoming_lanes)] = [roads[i].index(r) for r, _ in a.incoming_lanes]
    lanes = np.stack([select_graph(o).x[:, start : start + raw.max_lanes].cpu().numpy() for o in observations])
    onehot = slot[..., None] == np.arange(width + 1)  # [N, max_lanes, A + 1]
    queues = np.einsum("tnl,nla->tna", lanes.astype(np.float64), onehot)[..., :width]
    names = [[f"{_heading(scenario.roads[r].points)} {r}" for r in rs] for rs in roads]
    return queues, names


__all__ = [
    "policy_network",
    "traffic_scenario",
    "select_graph",
    "Rollout",
    "rollout",
    "PropagationTrace",
    "propagation_trace",
    "round_distances",
    "FixedPointStats",
    "fixed_point_stats",
    "Projection",
    "fit_projection",
    "draw_road_map",
    "plot_intentions",
    "plot_round_distances",
    "plot_attention",
    "describe_phase",
    "phase_labels",
    "plot_phase_maps",
    "plot_phase_timeline",
    "approach_queues",
]
