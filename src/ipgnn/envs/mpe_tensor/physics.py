"""MPE particle physics as batched tensor operations: ``B`` worlds, every entity, one call per step.

The semantics are ``mpe2``'s (``mpe2/_mpe_utils/core.py``, ``World.step``), operation for operation:

1. an actor's force is its action ``u`` (a direction in ``[-1, 1]^2``) times its ``accel`` —
   ``mpe2``'s *sensitivity*, 5.0 when the entity sets no ``accel`` (``simple_env._set_action``);
2. every pair ``(a, b)`` of entities that both ``collide`` pushes apart with the soft contact force
   ``contact_force * (p_a - p_b) / dist * k * log(1 + exp(-(dist - (size_a + size_b)) / k))``,
   ``k = contact_margin``, applied to each side that is ``movable``;
3. movable entities integrate semi-implicitly: ``p += v dt`` (the old velocity), then
   ``v = v (1 - damping) + F / mass dt``, then ``v`` is rescaled to ``max_speed`` when faster.

Defaults are ``mpe2``'s: ``dt = 0.1``, ``damping = 0.25``, ``contact_force = 1e2``,
``contact_margin = 1e-3``, mass 1. What differs from ``mpe2``:

- the pairwise contact forces are computed for all pairs at once: squared distances by broadcasting
  (``[B, C, D]`` x and y planes, from the ``D`` colliding entities onto the ``C`` movable colliding
  ones), the force itself for the pairs within reach (:data:`CONTACT_CUTOFF`), summed per entity,
  where ``mpe2`` accumulates them pair by pair in a double loop over ``a < b``: the same sum up to
  floating-point rounding (``~1e-15`` in float64). The pair geometry is kept for the state
  (:meth:`TensorWorld.contact_geometry`), so that a scenario's observations at ``s_{t+1}`` and the
  contact forces of the next step read the same tensors;
- two colliding entities at exactly the same position exert no force on each other (``mpe2`` divides
  by the zero distance and produces NaN);
- motor noise (``u_noise``) and communication (``c``, ``c_noise``) are not modelled: every ``mpe2``
  scenario this package mirrors has them off or silent;
- the default dtype is float32 (``mpe2`` computes in float64); pass ``dtype=torch.float64`` for
  comparisons with ``mpe2`` to ~1e-15.

Entity properties are per-entity vectors (``[E]``) shared by the ``B`` worlds; the state is
``p_pos [B, E, 2]`` and ``p_vel [B, E, 2]``. Everything runs on whatever device the tensors live on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Number = int | float

#: ``mpe2``'s action sensitivity when an entity sets no ``accel``.
DEFAULT_SENSITIVITY = 5.0


def _vector(
    values: Tensor | Sequence[Number] | Number, num: int, name: str, dtype: torch.dtype, device: torch.device
) -> Tensor:
    t = torch.as_tensor(values, dtype=dtype, device=device)
    if t.dim() == 0:
        t = t.expand(num).clone()
    if t.shape != (num,):
        raise ValueError(
            f"entity property '{name}' must be a scalar or have one value per entity "
            f"({num}), got shape {tuple(t.shape)}"
        )
    return t


#: pairs farther apart than ``size_a + size_b + CONTACT_CUTOFF * contact_margin`` are skipped: their
#: force, ``contact_force * contact_margin * log(1 + exp(-CONTACT_CUTOFF))`` < 1e-27 with mpe2's
#: constants, is below the float64 resolution of any force or velocity it could be added to.
CONTACT_CUTOFF = 60.0


@dataclass
class Pairs:
    """Geometry between two entity sets ``a`` and ``b``, ``[B, Na, Nb]`` tensors: ``dx, dy = b_j - a_i``
    and the squared distance ``d2`` (``inf`` where an entity faces itself, when so built).

    Squared distances order candidates like distances, so nearest-entity selection and "closer than
    ``r``" tests use ``d2`` directly; :attr:`dist` (a square root over all pairs) is computed only
    when read, once.
    """

    dx: Tensor
    dy: Tensor
    d2: Tensor

    @functools.cached_property
    def dist(self) -> Tensor:
        return torch.sqrt(self.d2)

    def block(self, na: int, nb: int) -> Pairs:
        """The geometry of the first ``na`` entities of ``a`` and the first ``nb`` of ``b`` (views)."""
        return Pairs(self.dx[:, :na, :nb], self.dy[:, :na, :nb], self.d2[:, :na, :nb])


def pair_geometry(a: Tensor, b: Tensor, out: Pairs | None = None) -> Pairs:
    """Relative positions ``b_j - a_i`` of ``b [B, Nb, 2]`` seen from ``a [B, Na, 2]``, as x and y planes
    (contiguous ``[B, Na, Nb]`` tensors), and their squared lengths.

    ``out``: the geometry of an earlier state, whose tensors are overwritten when their shape, dtype
    and device fit (it must not be read again). Steps reuse their pair tensors this way: on the CPU a
    fresh ``[64, 200, 200]`` float32 tensor costs about 1 ms of page faults, more than the arithmetic
    that fills it (``benchmarks/README.md``).
    """
    ax, ay = a[..., 0].contiguous().unsqueeze(2), a[..., 1].contiguous().unsqueeze(2)
    bx, by = b[..., 0].contiguous().unsqueeze(1), b[..., 1].contiguous().unsqueeze(1)
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):  # out= tensors take no gradient
        dx, dy = bx - ax, by - ay
        return Pairs(dx, dy, dx * dx + dy * dy)
    shape = (a.shape[0], a.shape[1], b.shape[1])
    if out is None or out.d2.shape != shape or out.d2.dtype != a.dtype or out.d2.device != a.device:
        with torch.inference_mode(False):  # writable after an inference-mode first use
            out = Pairs(*(torch.empty(shape, dtype=a.dtype, device=a.device) for _ in range(3)))
    dx, dy, d2 = out.dx, out.dy, out.d2
    # contiguous coordinate planes (above): a broadcast subtraction reading the interleaved (x, y)
    # pairs is 6x slower (1.0 against 0.16 ms for [64, 200, 200], one thread)
    torch.sub(bx, ax, out=dx)
    torch.sub(by, ay, out=dy)
    torch.mul(dx, dx, out=d2)
    d2.addcmul_(dy, dy)  # fused multiply-add where the CPU has one: d2 may differ from dx² + dy² by 1 ulp
    return Pairs(dx, dy, d2)


def pairs_within_reach(pairs: Pairs, reach: Tensor | float, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Indices ``(b, i, j)`` of the pairs with ``d2 < reach[i, j]^2`` (``reach``: ``[Na, Nb]``, or one
    number for all pairs); ``out``: a bool ``[B, Na, Nb]`` tensor to hold the mask."""
    mask = torch.lt(pairs.d2, reach * reach, out=out) if out is not None else pairs.d2 < reach * reach
    return mask.nonzero(as_tuple=True)


def contact_forces(
    p_pos: Tensor,
    size: Tensor,
    contact_force: float = 1e2,
    contact_margin: float = 1e-3,
    others: Tensor | None = None,
    others_size: Tensor | None = None,
    pairs: Pairs | None = None,
    near: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """Sum of ``mpe2``'s soft contact forces on each of ``C`` colliding entities.

    Args:
        p_pos: ``[B, C, 2]`` positions of the entities the forces act on.
        size: ``[C]`` their radii.
        contact_force, contact_margin: ``World.contact_force`` and ``World.contact_margin``.
        others, others_size: ``[B, D, 2]`` and ``[D]``, the colliding entities that push them (default:
            the same ``C``). An entity may appear in both: a pair at distance 0 exerts no force.
        pairs: ``pair_geometry(p_pos, others)`` when already computed (``d2`` may be ``inf`` for
            pairs to leave out, such as an entity and itself).
        near: ``(b, c, d)`` indices of the pairs within reach (:func:`pairs_within_reach`), when
            already computed from ``pairs``.

    Returns:
        ``[B, C, 2]``: ``sum_b contact_force * (p_a - p_b) / |p_a - p_b| * penetration(a, b)`` over the
        others ``b`` not at ``a``'s position (movability is applied by the caller).

    Only the squared distances are computed for all ``C x D`` pairs; the soft contact term (a
    ``logaddexp``, a square root and a division each) is evaluated for the pairs within reach
    (:data:`CONTACT_CUTOFF`), which in a spread-out world are a few per entity, and summed back with
    ``index_put_(accumulate=True)`` (deterministic on the CPU).
    """
    if others is None:
        others, others_size = p_pos, size
    if pairs is None:
        pairs = pair_geometry(p_pos, others)
    dist_min = size.unsqueeze(1) + others_size.unsqueeze(0)  # [C, D]
    k = contact_margin
    b, c, d = pairs_within_reach(pairs, dist_min + CONTACT_CUTOFF * k) if near is None else near
    out = torch.zeros(p_pos.shape, dtype=p_pos.dtype, device=p_pos.device)
    if b.numel() == 0:
        return out
    d2 = pairs.d2[b, c, d]
    dist = torch.sqrt(d2)
    zero = torch.zeros((), dtype=dist.dtype, device=dist.device)
    # (p_a - p_b) = -(dx, dy); coincident centres (an entity and itself, or two at one point) exert no force
    scale = torch.logaddexp(zero, (dist_min[c, d] - dist) / k).mul_(-k * contact_force).div_(dist)
    scale = torch.where(d2 > 0, scale, zero)
    out.index_put_((b, c), torch.stack([pairs.dx[b, c, d] * scale, pairs.dy[b, c, d] * scale], dim=-1), accumulate=True)
    return out


def _version(t: Tensor) -> int:
    """``t``'s in-place modification counter; inference tensors keep none (-1: they are replaced, not
    edited, by the world)."""
    return -1 if t.is_inference() else t._version


class TensorWorld:
    """``B`` MPE worlds of ``E`` entities with the same properties, stepped together.

    Entities ``0 .. A-1`` are the *actors* (learning agents first, then scripted ones): they receive an
    action direction each step. The others (landmarks, obstacles, balls) receive only contact forces.

    Args:
        num_envs: ``B``.
        size, mass, movable, collide, accel, max_speed: per-entity properties (``[E]``, or a scalar for
            all). ``accel`` is the action sensitivity (``mpe2``: ``accel`` if set, else 5.0);
            ``max_speed`` is ``inf`` for "no limit" (``mpe2``: ``None``).
        num_actors: ``A``.
        dt, damping, contact_force, contact_margin: ``mpe2``'s world constants.
        device, dtype: where and in what precision the state lives.
    """

    def __init__(
        self,
        num_envs: int,
        size: Tensor | Sequence[Number],
        num_actors: int,
        mass: Tensor | Sequence[Number] | Number = 1.0,
        movable: Tensor | Sequence[bool] | bool = True,
        collide: Tensor | Sequence[bool] | bool = True,
        accel: Tensor | Sequence[Number] | Number = DEFAULT_SENSITIVITY,
        max_speed: Tensor | Sequence[Number] | Number = float("inf"),
        dt: float = 0.1,
        damping: float = 0.25,
        contact_force: float = 1e2,
        contact_margin: float = 1e-3,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_envs = int(num_envs)
        self.size = torch.as_tensor(size, dtype=dtype, device=self.device).reshape(-1)
        e = self.num_entities = int(self.size.numel())
        if not 0 <= num_actors <= e:
            raise ValueError(f"num_actors must be in [0, {e}], got {num_actors}")
        self.num_actors = int(num_actors)
        self.mass = _vector(mass, e, "mass", dtype, self.device)
        if (self.mass <= 0).any():
            raise ValueError("entity masses must be positive")
        self.movable = _vector(movable, e, "movable", torch.bool, self.device)
        self.collide = _vector(collide, e, "collide", torch.bool, self.device)
        self.accel = _vector(accel, e, "accel", dtype, self.device)
        self.max_speed = _vector(max_speed, e, "max_speed", dtype, self.device)
        self.dt, self.damping = float(dt), float(damping)
        self.contact_force, self.contact_margin = float(contact_force), float(contact_margin)
        # contact pairs, fixed for the world's life: forces on the movable colliding entities (rows) from
        # every colliding entity (columns); fixed-fixed pairs are never formed
        self._rows = torch.nonzero(self.collide & self.movable).flatten()
        self._cols = torch.nonzero(self.collide).flatten()
        self._rows_all = self._rows.numel() == e
        self.num_contact_rows, self.num_contact_cols = self._rows.numel(), self._cols.numel()
        self._same = bool(torch.equal(self._rows, self._cols))
        self._row_size, self._col_size = self.size[self._rows], self.size[self._cols]
        # (row, column) positions of an entity facing itself, left out of the contact geometry
        self._self_pairs = (self._rows[:, None] == self._cols[None, :]).nonzero(as_tuple=True)
        # how many entities, from the first, are both rows and columns (see leading_block)
        m = min(self._rows.numel(), self._cols.numel())
        first = torch.arange(m, device=self.device)
        differs = ((self._rows[:m] != first) | (self._cols[:m] != first)).nonzero()
        self._leading = int(differs[0]) if differs.numel() else m
        reach = self._row_size[:, None] + self._col_size[None, :] + CONTACT_CUTOFF * self.contact_margin
        # one number when every pair has the same reach (one agent size): a scalar compare is faster
        self._reach: Tensor | float = (
            float(reach[0, 0]) if reach.numel() and bool((reach == reach[0, 0]).all()) else reach
        )
        self._near_mask: Tensor | None = None
        self._geometry: Pairs | None = None
        self._near: tuple[Tensor, Tensor, Tensor] | None = None
        self._geometry_of: tuple[int, int, int] | None = None
        self._limited = bool(torch.isfinite(self.max_speed).any())
        self._serial = 0
        self.p_pos = torch.zeros(self.num_envs, e, 2, dtype=dtype, device=self.device)
        self.p_vel = torch.zeros_like(self.p_pos)

    # ----------------------------------------------------------------------------------------------
    @property
    def p_pos(self) -> Tensor:
        """Positions ``[B, E, 2]``."""
        return self._p_pos

    @p_pos.setter
    def p_pos(self, value: Tensor) -> None:
        self._p_pos = value
        self._serial += 1

    @property
    def p_vel(self) -> Tensor:
        """Velocities ``[B, E, 2]``."""
        return self._p_vel

    @p_vel.setter
    def p_vel(self, value: Tensor) -> None:
        self._p_vel = value
        self._serial += 1

    def state_token(self) -> tuple[int, int, int]:
        """Changes whenever the state does: ``p_pos`` or ``p_vel`` replaced (as every step, reset and
        ``set_state`` do) or edited in place. What is computed from a state is kept under it."""
        return self._serial, _version(self._p_pos), _version(self._p_vel)

    # ----------------------------------------------------------------------------------------------
    def forces(self, action: Tensor | None) -> Tensor:
        """Total force on every entity, ``[B, E, 2]``: actors' ``action * accel`` plus contacts."""
        force = torch.zeros_like(self.p_pos)
        if action is not None and self.num_actors > 0:
            a = self.num_actors
            if action.shape != (self.num_envs, a, 2):
                raise ValueError(
                    f"action directions must have shape {(self.num_envs, a, 2)}, got {tuple(action.shape)}"
                )
            u = action.to(self.dtype) * self.accel[:a, None]
            force[:, :a] = torch.where(self.movable[:a, None], u, force[:, :a])
        if self._rows.numel() > 0 and self._cols.numel() > 1:
            rows = self.p_pos if self._rows_all else self.p_pos.index_select(1, self._rows)
            cols = None if self._same else self.p_pos.index_select(1, self._cols)
            f = contact_forces(
                rows,
                self._row_size,
                self.contact_force,
                self.contact_margin,
                cols,
                None if self._same else self._col_size,
                pairs=self.contact_geometry(),
                near=self.pairs_in_reach(),
            )
            force = force + f if self._rows_all else force.index_add(1, self._rows, f)
        return force

    def contact_geometry(self) -> Pairs:
        """Geometry of the colliding pairs at the current positions: ``[B, R, D]`` from the ``R`` movable
        colliding entities (rows, in entity order) to the ``D`` colliding ones (columns, in entity
        order), with ``d2 = inf`` where an entity faces itself.

        Computed once per state and kept until the positions are replaced (every step and
        ``set_state`` replaces them): a scenario that reads it for its observation at ``s_{t+1}``
        (e.g. its agents' ``k`` nearest agents, the leading block when the agents come first) hands the
        next step's contact forces the same tensors.
        """
        if self._geometry is None or self._geometry_of != self.state_token():
            rows = self.p_pos if self._rows_all else self.p_pos.index_select(1, self._rows)
            cols = rows if self._same else self.p_pos.index_select(1, self._cols)
            g = pair_geometry(rows, cols, out=self._geometry)
            g.d2[:, self._self_pairs[0], self._self_pairs[1]] = float("inf")
            self._geometry, self._geometry_of, self._near = g, self.state_token(), None
        return self._geometry

    def pairs_in_reach(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(b, row, column)`` indices (into :meth:`contact_geometry`) of the pairs close enough to
        exert a contact force (:data:`CONTACT_CUTOFF`), an entity and itself excluded; computed once
        per state. Every colliding pair (centres closer than the sum of radii) is among them."""
        g = self.contact_geometry()
        if self._near is None:
            if self._near_mask is None or self._near_mask.shape != g.d2.shape:
                with torch.inference_mode(False):
                    self._near_mask = torch.empty(g.d2.shape, dtype=torch.bool, device=self.device)
            self._near = pairs_within_reach(g, self._reach, out=self._near_mask)
        return self._near

    def leading_block(self, n: int) -> Pairs | None:
        """Pairs among entities ``0 .. n-1`` (``d2 = inf`` on the diagonal), a view of
        :meth:`contact_geometry`, when they are the first ``n`` rows and columns (movable and
        colliding); None otherwise."""
        return self.contact_geometry().block(n, n) if n <= self._leading else None

    def integrate(self, force: Tensor) -> None:
        """``mpe2``'s ``integrate_state`` for all movable entities of all worlds, in place."""
        movable = self.movable[:, None]
        new_pos = self.p_pos + self.p_vel * self.dt
        vel = self.p_vel * (1 - self.damping)
        vel = vel + (force / self.mass[:, None]) * self.dt
        if self._limited:
            speed = torch.sqrt(vel[..., 0] * vel[..., 0] + vel[..., 1] * vel[..., 1])  # [B, E]
            too_fast = speed > self.max_speed
            capped = vel / torch.where(too_fast, speed, torch.ones_like(speed)).unsqueeze(-1) * self.max_speed[:, None]
            vel = torch.where(too_fast.unsqueeze(-1), capped, vel)
        self.p_pos = torch.where(movable, new_pos, self.p_pos)
        self.p_vel = torch.where(movable, vel, self.p_vel)

    def step(self, action: Tensor | None) -> None:
        """One ``mpe2`` world step: ``action`` is ``[B, A, 2]`` (directions in ``[-1, 1]^2``) or None."""
        self.integrate(self.forces(action))

    # ----------------------------------------------------------------------------------------------
    def set_state(self, p_pos: Tensor, p_vel: Tensor | None = None) -> None:
        """Replace positions (and velocities, zero when omitted): ``[B, E, 2]``, or ``[E, 2]`` for all B."""
        shape = (self.num_envs, self.num_entities, 2)
        pos = torch.as_tensor(p_pos, dtype=self.dtype, device=self.device)
        vel = torch.zeros_like(pos) if p_vel is None else torch.as_tensor(p_vel, dtype=self.dtype, device=self.device)
        for name, t in (("p_pos", pos), ("p_vel", vel)):
            if t.shape not in (shape, shape[1:]):
                raise ValueError(f"{name} must have shape {shape} (or {shape[1:]}), got {tuple(t.shape)}")
        self.p_pos = pos.expand(shape).clone()
        self.p_vel = vel.expand(shape).clone()
