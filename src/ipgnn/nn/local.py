r"""Agent ``i``'s own share of intention propagation: what one signal controller computes, from its own
observation and the intentions its neighbours send it (decentralised execution).

:class:`IntentionPropagationNetwork` runs eq. (6) for all agents at once over a PyG graph. Every term of
eq. (6) for agent ``i`` reads only :math:`s_i`, :math:`\tilde\mu_i^{m-1}` and the neighbours'
:math:`\tilde\mu_j^{m-1}`, so the same weights can run on each agent separately, exchanging
:math:`\tilde\mu` between rounds:

1. :meth:`AgentStep.encode`: :math:`c_i = W_1 \mathrm{ReLU}(W_{\tau(i)} s_i + b_{\tau(i)}) + b_1`, the
   state term shared by all rounds, and :math:`\tilde\mu_i^0 = \mathrm{ReLU}(c_i)`; send
   :math:`\tilde\mu_i^0`.
2. for :math:`m = 1..M`: :meth:`AgentStep.update` with the received :math:`\tilde\mu_j^{m-1}`,

   .. math::
       \tilde\mu_i^{m} = \mathrm{ReLU}\Big(c_i + W_2 \big\Vert_{k=1}^{H}
           \sum_{j \in \mathcal H_i^m} \alpha_{ij}^{m,k} W_v^k \tilde\mu_j^{m-1}\Big),\qquad
       \alpha_{ij}^{m,k} = \mathrm{softmax}_{j \in \mathcal H_i^m}\big(\mathbf a_k^\top
           \mathrm{LeakyReLU}(W_s^k \tilde\mu_j^{m-1} + W_t^k \tilde\mu_i^{m-1})\big),

   where :math:`\mathcal H_i^m \subseteq \mathcal N(i)` are the neighbours heard in round ``m`` (all of
   them on perfect links: then this is eq. (6) exactly); send :math:`\tilde\mu_i^m` for ``m < M``.
3. :meth:`AgentStep.readout`: :math:`q_i` from :math:`[\tilde\mu_i^0 \Vert \cdots \Vert \tilde\mu_i^M]`
   (eq. 5), masked to the valid actions; :meth:`AgentStep.act` takes its mode.

With no neighbour heard, the softmax is over an empty set and the message term is 0:
:math:`\tilde\mu_i^m = \mathrm{ReLU}(c_i) = \tilde\mu_i^0`, the agent's independent decision.

Every method takes a leading batch dimension ``B`` (one controller: ``B = 1``) and a padded neighbour
dimension ``K`` with a ``heard [B, K]`` mask, so the same code serves one controller, a process hosting a
block of agents, and the whole network at once. It uses plain torch only (no PyG), so
:func:`torch.jit.script` compiles it into a file that a controller loads with ``torch.jit.load`` (or
libtorch in C++) without this package: :func:`export_agent_step`.
"""

# no `from __future__ import annotations`: TorchScript reads the class attributes' annotations as types
import json
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ipgnn.nn.propagation import IntentionPropagationNetwork


class AgentStep(nn.Module):
    r"""The per-agent step of :class:`IntentionPropagationNetwork` (see the module docstring for the
    equations). Build it with :meth:`from_network`; its weights are copies, shared by every agent (one
    encoder per agent type).

    Shapes:
        - ``x`` :math:`(B, d_s)`, ``agent_type`` :math:`(B,)` long
        - intentions and state terms :math:`(B, d)`; received intentions :math:`(B, K, d)` with
          ``heard`` :math:`(B, K)` bool
        - ``action_mask`` :math:`(B, A)` bool (``True`` = valid)
    """

    rounds: int
    heads: int
    head_dim: int
    channels: int
    discrete: bool
    has_value: bool
    negative_slope: float
    hops: int
    mask_value: float

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        discrete: bool,
        hidden: int,
        rounds: int,
        heads: int,
        num_agent_types: int,
        negative_slope: float = 0.2,
        hops: int = 1,
    ):
        super().__init__()
        self.hops = hops  # neighbours are the agents within this many links (ipgnn.graphs.expand_hops)
        self.rounds, self.heads, self.channels = rounds, heads, hidden
        self.head_dim = hidden // heads
        self.discrete = discrete
        self.has_value = heads > 1
        self.negative_slope = negative_slope
        self.mask_value = float(torch.finfo(torch.float32).min)  # as MaskedCategorical (TorchScript has no finfo)
        self.enc_weight = nn.Parameter(torch.empty(num_agent_types, hidden, obs_dim))  # W_tau
        self.enc_bias = nn.Parameter(torch.empty(num_agent_types, hidden))
        self.lin_state = nn.Linear(hidden, hidden)  # W_1
        self.lin_msg = nn.Linear(hidden, hidden, bias=False)  # W_2
        self.lin_src = nn.Linear(hidden, hidden, bias=False)  # W_s
        self.lin_dst = nn.Linear(hidden, hidden)  # W_t
        self.lin_value = nn.Linear(hidden, hidden, bias=False)  # W_v (unused with one head)
        self.att = nn.Parameter(torch.empty(heads, self.head_dim))
        self.head = nn.Linear((rounds + 1) * hidden, action_dim if discrete else 2 * action_dim)

    @classmethod
    def from_network(cls, net: IntentionPropagationNetwork) -> "AgentStep":
        """The per-agent step with a copy of ``net``'s weights (``net`` is left untouched). With
        ``net.hops > 1`` an agent's neighbours are all agents within ``hops`` links: pass neighbour lists
        from :func:`ipgnn.graphs.expand_hops`."""
        conv = net.conv
        enc = net.encoder.lins
        step = cls(
            enc[0].in_features,
            net.head.out_features if net.discrete else net.head.out_features // 2,
            net.discrete,
            conv.channels,
            net.rounds,
            conv.heads,
            len(enc),
            conv.negative_slope,
            net.hops,
        )
        with torch.no_grad():
            step.enc_weight.copy_(torch.stack([lin.weight for lin in enc]))
            step.enc_bias.copy_(torch.stack([lin.bias for lin in enc]))
            for name in ("lin_state", "lin_msg", "lin_src", "lin_dst"):
                getattr(step, name).load_state_dict(getattr(conv, name).state_dict())
            if conv.lin_value is not None:
                step.lin_value.load_state_dict(conv.lin_value.state_dict())
            else:
                step.lin_value.weight.copy_(torch.eye(conv.channels))
            step.att.copy_(conv.att[0])
            step.head.load_state_dict(net.head.state_dict())
        return step.eval().requires_grad_(False)

    # ------------------------------------------------------------------------------------------------
    @torch.jit.export
    def encode(self, x: Tensor, agent_type: Optional[Tensor] = None) -> Tensor:
        r"""The state term :math:`c_i = W_1 h_i + b_1` of eq. (6), with :math:`h_i` the typed encoder's
        output (app. B.2); :math:`\tilde\mu_i^0 = \mathrm{ReLU}(c_i)`."""
        if self.enc_weight.size(0) == 1 or agent_type is None:
            h = F.relu(F.linear(x, self.enc_weight[0], self.enc_bias[0]))
        else:
            w = self.enc_weight[agent_type]  # [B, d, d_s]: each agent its own type's encoder
            h = F.relu(torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + self.enc_bias[agent_type])
        return self.lin_state(h)

    @torch.jit.export
    def initial(self, state_term: Tensor) -> Tensor:
        r""":math:`\tilde\mu_i^0 = \mathrm{ReLU}(c_i)`: the intention sent in round 1."""
        return F.relu(state_term)

    @torch.jit.export
    def update(self, mu: Tensor, state_term: Tensor, received: Tensor, heard: Tensor) -> Tensor:
        r"""One round of eq. (6) for each of ``B`` agents: :math:`\tilde\mu_i^m` from its own
        :math:`\tilde\mu_i^{m-1}` (``mu``), its state term, and the ``K`` intentions it received
        (``received [B, K, d]``, ``heard [B, K]``: which slots hold a message; the attention is a softmax
        over those alone)."""
        b, k = received.size(0), received.size(1)
        hh, c = self.heads, self.head_dim
        query = self.lin_dst(mu).view(b, 1, hh, c)
        key = self.lin_src(received).view(b, k, hh, c)
        value = (self.lin_value(received) if self.has_value else received).view(b, k, hh, c)
        score = torch.einsum("bkhc,hc->bkh", F.leaky_relu(key + query, self.negative_slope), self.att)
        silent = ~heard.unsqueeze(-1)  # [B, K, 1]
        alpha = torch.softmax(score.masked_fill(silent, float("-inf")), dim=1).masked_fill(silent, 0.0)
        agg = (alpha.unsqueeze(-1) * value).sum(1).reshape(b, self.channels)
        return F.relu(state_term + self.lin_msg(agg))

    @torch.jit.export
    def readout(self, intentions: Tensor, action_mask: Optional[Tensor] = None) -> Tensor:
        r"""Eq. (5): the head on :math:`[\tilde\mu_i^0 \Vert \cdots \Vert \tilde\mu_i^M]`
        (``intentions [B, (M+1) d]``). Discrete: logits with invalid actions at the dtype's minimum (as
        :class:`~ipgnn.nn.distributions.MaskedCategorical`); continuous: ``[mean, log_std]``."""
        out = self.head(intentions)
        if self.discrete and action_mask is not None:
            out = out.masked_fill(~action_mask, self.mask_value)
        return out

    @torch.jit.export
    def act(self, intentions: Tensor, action_mask: Optional[Tensor] = None) -> Tensor:
        """The mode of :math:`q_i`: the best valid action (discrete, ``[B]`` long) or
        :math:`\\tanh(\\text{mean})` in ``[-1, 1]`` (continuous, ``[B, D]``)."""
        out = self.readout(intentions, action_mask)
        if self.discrete:
            return out.argmax(-1)
        return torch.tanh(out.chunk(2, dim=-1)[0])

    def forward(
        self,
        x: Tensor,
        neighbours: Tensor,
        heard: Tensor,
        agent_type: Optional[Tensor] = None,
        action_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Every agent at once on perfect links: ``neighbours [N, K]`` (agent indices, padding anywhere
        ``heard`` is ``False``). Returns the head's output ``[N, A]`` (as :meth:`readout`)."""
        state_term = self.encode(x, agent_type)
        mu = self.initial(state_term)
        mus = [mu]
        for _ in range(self.rounds):
            mu = self.update(mu, state_term, mu[neighbours], heard)
            mus.append(mu)
        return self.readout(torch.cat(mus, dim=-1), action_mask)


def neighbour_table(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The in-neighbours of every agent as a padded table: ``neighbours [N, K]`` (sources ``j`` of the
    edges ``j -> i``, in edge order; ``K`` the largest in-degree) and ``heard [N, K]`` (``False`` on
    padding). One sort, no loop over agents."""
    src, dst = edge_index[0], edge_index[1]
    if src.numel() == 0:
        z = torch.zeros(num_nodes, 0, dtype=torch.long)
        return z, z.bool()
    order = torch.sort(dst, stable=True).indices
    src, dst = src[order], dst[order]
    degree = torch.bincount(dst, minlength=num_nodes)
    start = torch.cumsum(degree, 0) - degree
    slot = torch.arange(dst.numel()) - start[dst]
    k = int(degree.max())
    neighbours = torch.zeros(num_nodes, k, dtype=torch.long)
    heard = torch.zeros(num_nodes, k, dtype=torch.bool)
    neighbours[dst, slot] = src
    heard[dst, slot] = True
    return neighbours, heard


def export_agent_step(step: AgentStep, path: Union[str, Path], meta: Optional[dict] = None) -> Path:
    """Write ``step`` as one TorchScript file: ``torch.jit.load(path)`` gives a module with
    ``encode``, ``initial``, ``update``, ``readout`` and ``act`` (and ``forward``) in any process with
    torch, or in C++ through libtorch, without PyG or this package.

    With ``meta``, its JSON goes beside it (``path`` with the suffix ``.json``), and the two files are one
    write: both go to temporary files (``<name>.tmp``) first, then are renamed into place. A failure at any
    point (a full disk, a raised error) leaves no temporary file, no new file of the pair and none of the
    directories the call created; it re-raises the error. Only a failure between the two renames removes an
    earlier file at ``path`` as well (never one half of a new pair beside an old other half)."""
    path = Path(path)
    targets = [path] if meta is None else [path, path.with_suffix(".json")]
    if len(set(targets)) < len(targets):
        raise ValueError(f"'{path}': the export's description goes to {path.stem}.json beside it; name the file .pt")
    tmps = [t.with_name(t.name + ".tmp") for t in targets]
    created, moved = _make_parents(path.parent), []
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it is still the format
            warnings.simplefilter("ignore", DeprecationWarning)  # libtorch loads from C++ (see README)
            torch.jit.save(torch.jit.script(step), str(tmps[0]))
        if meta is not None:
            tmps[1].write_text(json.dumps(meta, indent=2) + "\n")
        for tmp, target in zip(tmps, targets):
            tmp.replace(target)
            moved.append(target)
    except BaseException:
        for f in tmps + moved:
            f.unlink(missing_ok=True)
        _remove_dirs(created)
        raise
    return path


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    missing.reverse()
    try:
        for d in missing:
            d.mkdir()
    except OSError:
        _remove_dirs(missing)
        raise
    return missing


def _remove_dirs(created: list[Path]) -> None:
    """Remove the directories of :func:`_make_parents` again, innermost first (those still there and empty)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass
