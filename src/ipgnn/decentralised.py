r"""Decentralised execution: every agent runs its own share of intention propagation
(:class:`ipgnn.nn.local.AgentStep`) and exchanges intentions with its neighbours by messages, over links
that may lose or delay them.

**A decision** at step ``t`` (each agent ``i``, from its own observation row only):

1. :math:`c_i` and :math:`\tilde\mu_i^0` from :math:`s_i` (:meth:`AgentStep.encode`);
2. for :math:`m = 1..M`, in *round* :math:`r = tM + m - 1` of the episode: send :math:`\tilde\mu_i^{m-1}`
   on every out-link :math:`i \to j`, read the mailbox, update :math:`\tilde\mu_i^m` (eq. 6) from the
   intentions it holds for its in-neighbours;
3. act: the mode of :math:`q_i` (eq. 5).

**Links** (:class:`Links`). A message on link :math:`j \to i` in round ``r`` is lost with probability
``drop``, independently per link and round, and otherwise arrives ``delay`` rounds later (rounds run on
across decisions, so a delay of 1 hands round 1 of a decision the last intention of the previous one).
Whether it is lost is a hash of (episode key, ``r``, ``j``, ``i``) (:func:`link_uniform`): the same on every
transport and in every process, so a run is deterministic given its seed, and the in-process network
and the multi-process one take the same actions. An agent that did not hear neighbour ``j`` in a round
uses, by ``fallback``:

- ``last`` (stale messages): the last intention it received from ``j`` in this episode, however old; a
  neighbour never heard is left out of the attention;
- ``own``: its own :math:`\tilde\mu_i^0` in ``j``'s place (it assumes ``j`` intends what it would do alone);
- ``skip``: ``j`` is left out of this round's attention (the softmax is over the neighbours heard).

With no neighbour in the attention the message term is 0 and :math:`\tilde\mu_i^m = \tilde\mu_i^0`: the
agent decides alone. With ``drop = 0`` and ``delay = 0`` every fallback is eq. (6) exactly, and the
actions are the central network's (tested).

**A message** is one intention: ``d`` float32 values (512 bytes at ``d = 128``) and a 12-byte header
(sender, receiver and round as int32): :data:`HEADER_BYTES`. Each agent sends ``M`` per out-link per
decision; :attr:`DecentralisedPolicy.stats` counts them.

**Transports.** ``processes = 0`` runs every agent in this process (the mailboxes and links are the same
code; the fast way to sweep link settings). ``processes = W >= 1`` starts ``W`` worker processes (spawn),
each hosting a contiguous block of agents (``W = N``: one process per agent). The coordinator, which
plays the part of the intersections' sensors, sends each worker only its agents' observation rows and
neighbour lists; the workers exchange intentions among themselves through ``multiprocessing`` queues
(one inbox per worker) and return their agents' actions.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ipgnn.cpu import set_threads, usable_cores
from ipgnn.graphs import expand_hops
from ipgnn.nn.local import AgentStep, neighbour_table

FALLBACKS = ("last", "own", "skip")
HEADER_BYTES = 12  # sender, receiver, round: three int32


@dataclass(frozen=True)
class Links:
    """The communication links between agents (see the module docstring).

    Args:
        drop: probability that a message is lost, per link and round, in ``[0, 1]``.
        delay: rounds a message takes to arrive (``0``: in the round it is sent).
        fallback: what an agent uses for a neighbour it did not hear: ``last``, ``own`` or ``skip``.
    """

    drop: float = 0.0
    delay: int = 0
    fallback: str = "last"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.drop) <= 1.0:
            raise ValueError(f"drop: a probability in [0, 1] is expected, got {self.drop}")
        if int(self.delay) != self.delay or self.delay < 0:
            raise ValueError(f"delay: a whole number of rounds >= 0 is expected, got {self.delay}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback: one of {', '.join(FALLBACKS)} is expected, got {self.fallback!r}")

    @property
    def perfect(self) -> bool:
        return self.drop == 0.0 and self.delay == 0


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return z ^ (z >> np.uint64(31))


def link_uniform(key: int, rnd: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """A uniform number in ``[0, 1)`` for each message ``src -> dst`` of round ``rnd`` in the episode
    ``key``: a counter-based hash (SplitMix64), so any process can draw its own links' numbers and
    all agree."""
    with np.errstate(over="ignore"):
        z = _splitmix64(np.full(len(src), np.uint64(key % 2**64), dtype=np.uint64))
        z = _splitmix64(z ^ np.uint64(rnd))
        z = _splitmix64(z ^ np.asarray(src, dtype=np.uint64))
        z = _splitmix64(z ^ (np.asarray(dst, dtype=np.uint64) << np.uint64(32)))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


class Mailbox:
    """What a block of receiving agents has been sent: messages in flight (with their arrival round) and,
    per (receiver, sender), the last intention that arrived and when. Keys are ``receiver * N + sender``;
    every operation is a sort or a search over them, never a loop over agents."""

    def __init__(self, links: Links, num_agents: int, dim: int):
        self.links, self.num_agents, self.dim = links, num_agents, dim
        self.reset()

    def reset(self) -> None:
        self.keys = torch.zeros(0, dtype=torch.long)
        self.values = torch.zeros(0, self.dim)
        self.arrived = torch.zeros(0, dtype=torch.long)
        self.in_flight: list[tuple[int, Tensor, Tensor]] = []

    def post(self, rnd: int, src: Tensor, dst: Tensor, values: Tensor) -> None:
        """Messages that survived their links in round ``rnd``; they arrive ``delay`` rounds later."""
        if src.numel():
            self.in_flight.append((rnd + self.links.delay, dst * self.num_agents + src, values))

    def _deliver(self, rnd: int) -> None:
        due = [m for m in self.in_flight if m[0] <= rnd]
        if not due:
            return
        self.in_flight = [m for m in self.in_flight if m[0] > rnd]
        keys = torch.cat([self.keys, *(m[1] for m in due)])
        values = torch.cat([self.values, *(m[2] for m in due)])
        arrived = torch.cat([self.arrived, *(torch.full_like(m[1], m[0]) for m in due)])
        keys, order = torch.sort(keys, stable=True)  # the newest of each key comes last
        last = torch.ones_like(keys, dtype=torch.bool)
        last[:-1] = keys[1:] != keys[:-1]
        self.keys, self.values, self.arrived = keys[last], values[order[last]], arrived[order[last]]

    def view(
        self, rnd: int, receivers: Tensor, neighbours: Tensor, valid: Tensor, own: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``received [B, K, d]`` and ``heard [B, K]`` for the update of round ``rnd`` of the agents
        ``receivers [B]`` with in-neighbours ``neighbours [B, K]`` (``valid`` marks real slots);
        ``own [B, d]`` is each receiver's :math:`\\tilde\\mu^0`, for ``fallback = own``."""
        self._deliver(rnd)
        query = receivers.unsqueeze(1) * self.num_agents + neighbours  # [B, K]
        b, k = query.shape
        received = own.new_zeros(b, k, self.dim)
        fresh = torch.zeros(b, k, dtype=torch.bool)
        found = torch.zeros(b, k, dtype=torch.bool)
        if self.keys.numel():
            pos = torch.searchsorted(self.keys, query.reshape(-1)).clamp_(max=self.keys.numel() - 1)
            found = (self.keys[pos] == query.reshape(-1)).view(b, k) & valid
            fresh = found & (self.arrived[pos] == rnd).view(b, k)
            received = torch.where(found.unsqueeze(-1), self.values[pos].view(b, k, self.dim), received)
        fallback = self.links.fallback
        if fallback == "last":
            return received, found
        if fallback == "own":
            return torch.where(fresh.unsqueeze(-1), received, own.unsqueeze(1).expand(b, k, self.dim)), valid
        return received, fresh


class AgentBlock:
    """A block of agents (global ids ``agents``) deciding with :class:`AgentStep` from their own rows and
    their mailbox. The body of a worker process, or of the whole in-process network."""

    def __init__(self, step: AgentStep, agents: Tensor, num_agents: int, links: Links):
        self.step, self.agents, self.links = step, agents, links
        self.row = torch.full((num_agents,), -1, dtype=torch.long)
        self.row[agents] = torch.arange(agents.numel())
        self.mailbox = Mailbox(links, num_agents, step.channels)
        self.sent = self.lost = 0  # messages over the block's life (all episodes)
        self.begin_episode(0)

    def begin_episode(self, key: int) -> None:
        self.key, self.decision = int(key), 0
        self.mailbox.reset()

    @torch.no_grad()
    def decide(
        self,
        x: Tensor,
        agent_type: Tensor | None,
        action_mask: Tensor | None,
        neighbours: Tensor,
        valid: Tensor,
        out_src: Tensor,
        out_dst: Tensor,
        exchange: Callable[[int, Tensor, Tensor, Tensor], None],
    ) -> Tensor:
        """The block's actions for one decision. ``x`` etc. are the block's rows; ``neighbours`` and
        ``out_src -> out_dst`` (the links leaving the block) use global ids; ``exchange(r, src, dst,
        values)`` delivers the round's surviving messages and returns once every message of round ``r``
        addressed to this block has been posted to its mailbox."""
        step, m_rounds = self.step, self.step.rounds
        state_term = step.encode(x, agent_type)
        mu = step.initial(state_term)
        mus = [mu]
        src_np, dst_np = out_src.numpy(), out_dst.numpy()
        for m in range(1, m_rounds + 1):
            rnd = self.decision * m_rounds + m - 1
            ok = (
                link_uniform(self.key, rnd, src_np, dst_np) >= self.links.drop
                if self.links.drop > 0
                else np.ones(len(src_np), dtype=bool)
            )
            ok_t = torch.from_numpy(ok)
            self.sent += len(src_np)
            self.lost += int(len(src_np) - ok.sum())
            exchange(rnd, out_src[ok_t], out_dst[ok_t], mu[self.row[out_src[ok_t]]])
            received, heard = self.mailbox.view(rnd, self.agents, neighbours, valid, mus[0])
            mu = step.update(mu, state_term, received, heard)
            mus.append(mu)
        self.decision += 1
        return step.act(torch.cat(mus, dim=-1), action_mask)


def _serve(w: int, step: AgentStep, agents: Tensor, owner: Tensor, links: Links, conn, inboxes) -> None:
    """A worker process: hosts the block ``agents`` and answers the coordinator's commands."""
    set_threads(1)  # one agent block per process: no intra-op threads of its own
    num_agents = owner.numel()
    block = AgentBlock(step, agents, num_agents, links)
    workers = len(inboxes)
    pending: dict[int, list] = {}

    def exchange(rnd: int, src: Tensor, dst: Tensor, values: Tensor) -> None:
        dest = owner[dst]
        for p in range(workers):
            sel = dest == p
            if p == w:
                block.mailbox.post(rnd, src[sel], dst[sel], values[sel])
            else:  # every peer gets one batch per round, empty or not: it marks the round's end
                inboxes[p].put((rnd, w, src[sel].numpy(), dst[sel].numpy(), values[sel].numpy()))
        got = pending.setdefault(rnd, [])
        while len(got) < workers - 1:
            try:
                item = inboxes[w].get(timeout=300)
            except queue.Empty:
                raise RuntimeError(f"worker {w}: no message from its peers in round {rnd} for 300 s") from None
            pending.setdefault(item[0], []).append(item)
        for _, _, s, d, v in sorted(pending.pop(rnd), key=lambda it: it[1]):
            block.mailbox.post(rnd, torch.from_numpy(s), torch.from_numpy(d), torch.from_numpy(v))

    conn.send(("ok", None))
    while True:
        cmd, args = conn.recv()
        try:
            if cmd == "close":
                break
            if cmd == "begin":
                block.begin_episode(args)
                pending.clear()
                conn.send(("ok", None))
            elif cmd == "decide":
                conn.send(("ok", block.decide(*args, exchange=exchange)))
            elif cmd == "stats":
                conn.send(("ok", (block.sent, block.lost)))
        except Exception as exc:  # the coordinator raises it with the worker's name
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class DecentralisedPolicy:
    """``obs -> joint action`` by decentralised execution (module docstring), usable wherever a policy
    function is (:func:`ipgnn.runs.evaluate` calls :meth:`begin_episode` before each episode).

    Args:
        step: the per-agent step (:meth:`AgentStep.from_network`).
        num_agents: N.
        links: the links between agents.
        processes: ``0``: every agent in this process; ``W``: ``W`` worker processes, each with a
            contiguous block of agents.
    """

    def __init__(self, step: AgentStep, num_agents: int, links: Links = Links(), processes: int = 0):
        if processes < 0 or processes > num_agents:
            raise ValueError(
                f"processes: expected 0 (in this process) to {num_agents} (one per agent), got {processes}"
            )
        self.step, self.num_agents, self.links, self.processes = step, num_agents, links, processes
        self.decisions = 0
        if processes == 0:
            self._block = AgentBlock(step, torch.arange(num_agents), num_agents, links)
            return
        blocks = [torch.from_numpy(b) for b in np.array_split(np.arange(num_agents), processes)]
        self._blocks = blocks
        owner = torch.empty(num_agents, dtype=torch.long)
        for w, b in enumerate(blocks):
            owner[b] = w
        self._owner = owner
        ctx = mp.get_context("spawn")  # fork would copy the simulator's state and torch's threads
        inboxes = [ctx.Queue() for _ in range(processes)]
        self._conns, self._procs = [], []
        for w, b in enumerate(blocks):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(w, step, b, owner, links, child, inboxes), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._inboxes = inboxes
        self._call([()] * processes, "ready", send=False)

    def _call(self, args: list, cmd: str, send: bool = True) -> list[Any]:
        if send:
            for conn, a in zip(self._conns, args):
                conn.send((cmd, a))
        out = []
        for w, conn in enumerate(self._conns):
            while not conn.poll(5.0):
                if not self._procs[w].is_alive():
                    raise RuntimeError(
                        f"decentralised worker {w} died (exit code {self._procs[w].exitcode}) during '{cmd}'"
                    )
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"decentralised worker {w} failed in '{cmd}': {value}")
            out.append(value)
        return out

    def begin_episode(self, key: int) -> None:
        """Empty every mailbox; ``key`` (the episode's seed) keys the links' losses."""
        if self.processes == 0:
            self._block.begin_episode(key)
        else:
            self._call([key] * self.processes, "begin")

    def __call__(self, obs) -> Tensor:
        n = self.num_agents
        edge_index = expand_hops(obs.edge_index.cpu(), n, self.step.hops)
        neighbours, valid = neighbour_table(edge_index, n)
        x = obs.x.cpu().float()
        agent_type = getattr(obs, "agent_type", None)
        mask = getattr(obs, "action_mask", None)
        self.decisions += 1
        if self.processes == 0:
            block = self._block
            return block.decide(
                x, agent_type, mask, neighbours, valid, edge_index[0], edge_index[1], exchange=block.mailbox.post
            )
        args = []
        owner_src = self._owner[edge_index[0]]
        for w, rows in enumerate(self._blocks):
            out = owner_src == w
            args.append(
                (
                    x[rows],
                    None if agent_type is None else agent_type[rows],
                    None if mask is None else mask[rows],
                    neighbours[rows],
                    valid[rows],
                    edge_index[0][out],
                    edge_index[1][out],
                )
            )
        return torch.cat(self._call(args, "decide"))

    @property
    def stats(self) -> dict[str, float]:
        """Messages sent and lost, and the bytes per agent and round they took (module docstring)."""
        if self.processes == 0:
            sent, lost = self._block.sent, self._block.lost
        else:
            counts = self._call([()] * self.processes, "stats")
            sent, lost = sum(c[0] for c in counts), sum(c[1] for c in counts)
        rounds = self.decisions * self.step.rounds
        per_message = 4 * self.step.channels + HEADER_BYTES
        return {
            "messages_sent": float(sent),
            "messages_lost": float(lost),
            "bytes_per_message": float(per_message),
            "bytes_per_agent_round": per_message * sent / max(1, rounds * self.num_agents),
        }

    def close(self) -> None:
        if self.processes == 0:
            return
        for conn in self._conns:
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        for q in self._inboxes:
            q.close()
            q.cancel_join_thread()


def decentralised_policy(
    algo, num_agents: int, links: Links = Links(), processes: int | None = None
) -> DecentralisedPolicy:
    """A trained learner's policy (its ``policy`` attribute, an
    :class:`~ipgnn.nn.propagation.IntentionPropagationNetwork`) as a :class:`DecentralisedPolicy`;
    ``processes=None``: the usable cores, at most ``num_agents``."""
    from ipgnn.nn.propagation import IntentionPropagationNetwork

    policy = getattr(algo, "policy", None)
    if not isinstance(policy, IntentionPropagationNetwork):
        raise ValueError(
            f"decentralised execution needs an intention-propagation policy (algo.name: ipsac); "
            f"this checkpoint's algorithm is {type(algo).__name__}"
        )
    processes = min(num_agents, usable_cores()) if processes is None else processes
    return DecentralisedPolicy(AgentStep.from_network(policy), num_agents, links, processes)
