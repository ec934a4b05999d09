"""Experiment configuration: a typed schema, YAML loading, dotted overrides.

A config is four independent parts kept apart as in BenchMARL: ``env`` (the task and its
communication graph), ``model`` (network sizes), ``algo`` (the loss and its hyper-parameters) and
``train``/``replay``/``logger`` (the experiment). Defaults are the paper's (Table 2, app. D; sec. 5.2
for the network); CPU-sized runs override them in their YAML or on the command line.

Every error names the file, the dotted key and what was expected::

    configs/x.yaml: model.hidden: expected an integer, got 'big'
    configs/x.yaml: unknown key 'model.hiden' (did you mean 'model.hidden'?)

Overrides use the form ``wandb agent`` passes: ``--train.total_steps=5000`` or ``model.rounds=3``.

YAML merge keys work; a top-level key that starts with ``.`` is not part of the config, a place for anchors::

    .small: &small {hidden: 64, rounds: 1}
    model: {<<: *small, heads: 2}

Files and the values in them are bounded (:data:`MAX_CONFIG_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES`), as is
every size (``MAX_*``, each with its reason), and an error echoes at most :data:`MAX_ECHO` characters of input.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ipgnn.seeding import MAX_SEED


class ConfigError(ValueError):
    """A configuration problem, with the file and key it comes from."""


# --------------------------------------------------------------------------------------------------
# Limits. Every size a config sets is bounded here, far above any run of the paper or of this package, so a
# typo or a hostile file is refused in milliseconds, with the key and the limit, before anything is allocated
# or handed to C code (torch's C ints and longs); what fits the limits but not the machine is refused by the
# memory checks (the replay buffer's in ipgnn.training.builders, the networks' in ipgnn.algos).

MAX_CONFIG_BYTES = 2**20  #: a config file is at most 1 MiB (the largest shipped config is 3 KB)
MAX_DEPTH = 64  #: YAML nesting levels (the schema has 4; options a few more); deeper is refused while parsing
MAX_NODES = 100_000  #: YAML values after aliases expand (a config has a few hundred): bounds an alias bomb
MAX_ECHO = 200  #: characters of user input echoed in an error (then '...')
MAX_ERRORS = 10  #: problems listed by one ConfigError (then how many more)
MAX_STEPS = 10**12  #: step counts and intervals
MAX_AGENTS = 2**16  #: agents of one task
MAX_ENVS = 2**16  #: environments stepped together
MAX_WIDTH = 2**14  #: network width and heads
MAX_LAYERS = 64  #: propagation rounds, hops and extra critic layers
MAX_BATCH = 2**20  #: transitions per minibatch
MAX_WORKERS = 1024  #: rollout workers
MAX_THREADS = 4096  #: the learner's torch threads
MIN_REPLAY_BYTES, MAX_REPLAY_BYTES = 2**10, 2**50  #: a replay budget such as '8GiB': from 1 KiB to 1 PiB


@dataclass(frozen=True)
class _Why:
    """Why a field has its upper limit: appended to the error that refuses a value above it."""

    text: str


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` for an error message, cut to ``limit`` characters with how long it was (a 1 MB string, or what
    an alias expands to, is not printed back). The one truncation of echoed input in the package."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def echo(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` for an error message, cut by :func:`clip`."""
    return clip(repr(value), limit)


def _integer(v: Any) -> Any:
    """An integer, not a boolean, a string or a fraction (``true`` is not 1, ``'64'`` is not 64); a float that
    is a whole number (``1e6``: YAML 1.2 reads it as a float) is taken as that integer."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise PydanticCustomError("int_type", "Input should be an integer")
    if isinstance(v, numbers.Integral):
        return int(v)
    if not (math.isfinite(v) and float(v).is_integer()):
        raise PydanticCustomError("int_type", "Input should be an integer")
    return int(v)


def _real(v: Any) -> Any:
    """A number, not a boolean or a string; an integer is taken as a float."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise PydanticCustomError("float_type", "Input should be a number")
    return v


def _boolean(v: Any) -> Any:
    """``true`` or ``false``, not ``1``, ``0`` or a string."""
    if not isinstance(v, bool):
        raise PydanticCustomError("bool_type", "Input should be true or false")
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_real)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
Steps = Annotated[Int, Field(le=MAX_STEPS), _Why("a million times the paper's runs of 1e6 steps")]
Agents = Annotated[
    Int, Field(le=MAX_AGENTS), _Why("53 times the largest task (1225 agents); a k-NN graph of more needs 16 GiB")
]
Envs = Annotated[Int, Field(le=MAX_ENVS), _Why("each is stepped in one tensor of this process")]
Width = Annotated[Int, Field(le=MAX_WIDTH), _Why("128 times Table 2's 128; one square layer of this width is 1 GiB")]
Layers = Annotated[Int, Field(le=MAX_LAYERS), _Why("layers run one after another; the paper uses 1 to 2")]
Batch = Annotated[Int, Field(le=MAX_BATCH), _Why("1024 times Table 2's 1024")]
Workers = Annotated[Int, Field(le=MAX_WORKERS), _Why("one process each")]
Seed = Annotated[Int, Field(le=MAX_SEED), _Why("torch.manual_seed takes a signed 64-bit integer")]


class _Section(BaseModel):
    # allow_inf_nan=False: an lr, alpha or scale of .inf or .nan is refused with the key that holds it
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class GraphConfig(_Section):
    """How the communication graph is built each step (sec. 5.3)."""

    kind: Literal["env", "knn", "full"] = Field(
        "knn", description="env: the task's own static graph; knn: k nearest agents by position; full: all pairs"
    )
    k: Agents = Field(4, ge=1, description="neighbours per agent for kind=knn (paper: 4 below 30 agents, 8 above)")
    symmetric: Bool = Field(
        False, description="knn only: add j->i whenever i->j exists (in-degree is then no longer exactly k)"
    )


class EnvConfig(_Section):
    task: str = Field("mpe_spread", description="a name from ipgnn.envs.TASKS")
    num_agents: Agents = Field(3, ge=1)
    max_steps: Steps = Field(25, ge=1, description="episode length (app. D: 25 for MPE/MAgent, 100 for CityFlow)")
    continuous_actions: Bool = False
    num_envs: Envs = Field(
        1,
        ge=1,
        description="environments stepped together, for tasks with a batched "
        "interface (the tensor MPE tasks); every one counts as env steps",
    )
    graph: GraphConfig = Field(default_factory=GraphConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="task-specific options, checked by the task")


class ModelConfig(_Section):
    """Sizes of the intention propagation network and the critics (sec. 5.2, app. B.2)."""

    hidden: Width = Field(128, ge=1, description="width of every layer (Table 2: 128)")
    rounds: Layers = Field(
        2,
        ge=0,
        description="M, mean-field propagation rounds with shared weights (eq. 6); the paper's 'hop size' h = 2",
    )
    hops: Layers = Field(1, ge=1, description="radius of the neighbourhood each round reads (1 = the graph itself)")
    heads: Width = Field(1, ge=1, description="attention heads of the propagation layer")
    critic_state_layers: Layers = Field(0, ge=0, description="extra state-only GNN layers in Q and V")

    @field_validator("heads")
    @classmethod
    def _heads_divide_hidden(cls, heads: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden")  # validated before heads (field order); reported against model.heads
        if hidden is not None and hidden % heads:
            raise ValueError(f"must divide model.hidden ({hidden}): heads ({heads}) split the width evenly")
        return heads


ALGO_NAMES = ("ipsac", "iql", "dgn", "qmix", "maddpg", "maddpg_s", "pic", "colight")


class AlgoConfig(_Section):
    """The learning algorithm: IP-SAC (Algorithm 1) or one of the paper's baselines (``name``).

    The fields below are IP-SAC's; the baselines share ``gamma``, ``tau``, ``lr``,
    ``target_update_interval`` and ``max_grad_norm`` and read their own settings from ``options``
    (each algorithm checks its options and documents their defaults). Learning rates default to Table 2's
    single value when left unset."""

    name: Literal["ipsac", "iql", "dgn", "qmix", "maddpg", "maddpg_s", "pic", "colight"] = Field(
        "ipsac", description="ipsac (the paper's method) or a baseline of sec. 5.2 / app. B.1"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="algorithm-specific settings (baselines)")
    gamma: Float = Field(0.95, ge=0.0, le=1.0, description="discount (Table 2)")
    reward_scale: Float = Field(
        1.0,
        gt=0.0,
        description="every algorithm learns from r_i * reward_scale (stored so "
        "in the replay buffer); returns and metrics stay unscaled",
    )
    tau: Float = Field(0.01, gt=0.0, le=1.0, description="Polyak coefficient of the target value network")
    lr: Float = Field(0.01, gt=0.0, description="learning rate of all networks (Table 2)")
    policy_lr: Float | None = Field(None, gt=0.0)
    critic_lr: Float | None = Field(None, gt=0.0)
    value_lr: Float | None = Field(None, gt=0.0)
    alpha: Float = Field(0.2, gt=0.0, description="entropy weight (Table 2 'regularizer factor')")
    autotune_alpha: Bool = Field(False, description="tune alpha towards target_entropy instead of fixing it")
    target_entropy: Float | None = Field(
        None, description="per-agent target entropy; None: -action_dim (continuous), 0.6*log|A| (discrete)"
    )
    alpha_lr: Float | None = Field(None, gt=0.0)
    discrete_neighbour_actions: Literal["gumbel", "probs"] = Field(
        "gumbel", description="what the critic sees on edges in the policy/value losses for discrete actions"
    )
    gumbel_temperature: Float = Field(1.0, gt=0.0)
    target_update_interval: Steps = Field(1, ge=1, description="gradient steps between Polyak updates (Table 2: 1)")
    max_grad_norm: Float | None = Field(None, gt=0.0, description="clip each network's gradient norm")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="fp32, or bf16: the update's forward runs under bfloat16 autocast (matrix products and "
        "the graph layers' hidden features in bfloat16; network outputs, losses, parameters and "
        "optimiser states stay float32). 1.8-3.7x faster per update measured on a CPU with "
        "AVX512-BF16 (benchmarks/README.md); not yet measured on a GPU; ipsac only",
    )


_BYTE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"500 MB"``, ``"1.5GB"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]+)\s*", text)
    if not m or m.group(2).upper() not in _BYTE_UNITS:
        raise ValueError(f"expected a number of transitions or a size like '8GiB' or '500MB', got {echo(text)}")
    size = float(m.group(1)) * _BYTE_UNITS[m.group(2).upper()]
    if not math.isfinite(size):
        raise ValueError(f"{echo(text)} is too large a size: give one like '8GiB' or '500MB'")
    return int(size)


class ReplayConfig(_Section):
    capacity: int | str = Field(
        1_000_000,
        description="transitions (Table 2: 1e6), or a memory budget such as "
        f"'8GiB' that the trainer turns into transitions (1 to {MAX_STEPS:.0e} transitions, or 1 KiB to 1 PiB)",
    )

    @field_validator("capacity", mode="before")
    @classmethod
    def _capacity(cls, v: Any) -> int | str:
        """A number of transitions from 1 to :data:`MAX_STEPS`, or a budget from 1 KiB to 1 PiB: ``0GiB`` or
        ``1B`` holds no transition (the exact size of one is checked when the task is built)."""
        if isinstance(v, str):
            size = parse_bytes(v)
            if not MIN_REPLAY_BYTES <= size <= MAX_REPLAY_BYTES:
                raise ValueError(
                    f"a budget of {echo(v)} ({size} B) is outside 1 KiB to 1 PiB: a buffer holds at least one "
                    "transition; give a number of transitions or a size like '8GiB'"
                )
            return v
        try:
            n = _integer(v)
        except PydanticCustomError:
            raise ValueError(f"expected a number of transitions or a size like '8GiB', got {echo(v)}") from None
        if not 1 <= n <= MAX_STEPS:
            raise ValueError(f"must be from 1 to {MAX_STEPS} transitions, got {n}")
        return n

    batch_size: Batch = Field(1024, ge=1, description="transitions per minibatch (Table 2: 1024)")
    device: Literal["auto", "cpu", "learner"] = Field(
        "auto",
        description="where the buffer lives and minibatches are assembled: 'learner' (the training "
        "device, e.g. the GPU), 'cpu', or 'auto' (the learner's device when the buffer takes "
        "at most half of its free memory, else the CPU)",
    )

    @field_validator("batch_size")
    @classmethod
    def _batch_fits_capacity(cls, batch: int, info: ValidationInfo) -> int:
        capacity = info.data.get("capacity")  # validated before batch_size (field order)
        if isinstance(capacity, int) and batch > capacity:
            raise ValueError(
                f"a minibatch of {batch} transitions is more than replay.capacity ({capacity} transitions) "
                f"holds: lower replay.batch_size to at most {capacity}, or raise replay.capacity"
            )
        return batch


class TrainConfig(_Section):
    total_steps: Steps = Field(1_000_000, ge=1, description="environment steps")
    learning_starts: Steps = Field(1000, ge=0, description="uniform random steps before learning")
    update_every: Steps = Field(
        100,
        ge=1,
        description="environment steps between update phases (Table 2, i.e. "
        "PIC's reference code: steps_per_actor_update=100)",
    )
    gradient_steps: Steps = Field(
        8, ge=0, description="gradient steps per update phase (Table 2 / PIC's code: updates_per_step=8)"
    )
    eval_every: Steps = Field(10_000, ge=0, description="environment steps between evaluations (0: never)")
    eval_episodes: Steps = Field(5, ge=1)
    checkpoint_every: Steps = Field(10_000, ge=0, description="environment steps between checkpoints (0: at end only)")
    save_replay: Bool = Field(True, description="store the replay buffer with checkpoints so resume is exact")
    log_every: Steps = Field(1000, ge=1, description="environment steps between logged training points")
    schedule_reference_steps: Steps | None = Field(
        1_000_000,
        ge=1,
        description="the run length for which the algorithms' step-denominated schedules (the "
        "epsilon decay of IQL, QMIX and DGN) are written: each is scaled by "
        "total_steps / this, one rule for every method; null: use them as written",
    )

    @property
    def schedule_scale(self) -> float:
        r"""The factor on every step-denominated algorithm schedule: :math:`T / T_\text{ref}` for a run of
        :math:`T` = ``total_steps`` environment steps, or 1 when ``schedule_reference_steps`` is null. The
        method files' schedules are published for runs of about :math:`10^6` steps (Table 2's runs, sec. 5.4:
        :math:`10^6`-:math:`1.5 \cdot 10^6`), so a run 100 times shorter explores over a 100 times shorter
        prefix: the same fraction of the run for every method."""
        ref = self.schedule_reference_steps
        return 1.0 if ref is None else self.total_steps / ref


class RolloutConfig(_Section):
    """Where environments run (see :mod:`ipgnn.rollout`)."""

    workers: Workers = Field(
        1,
        ge=1,
        description="environment workers, one process (or Ray actor) each; 1 with "
        "backend 'process' runs the environment in the learner's process",
    )
    backend: Literal["process", "ray"] = Field("process", description="worker processes here, or Ray actors")
    address: str | None = Field(
        None,
        description="Ray cluster address ('auto' after `ray start`, or "
        "ray://host:10001); None starts a local Ray instance",
    )


class LoggerConfig(_Section):
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="W&B mode; auto: online when credentials are configured, offline otherwise"
    )
    project: str = "ipgnn"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = Field(default_factory=list)
    run_root: str = Field("runs", description="run directories go to <run_root>/<name>-<time>/")
    progress: Bool = Field(True, description="show a progress bar on the console")


class ExperimentConfig(_Section):
    name: str = "ipgnn"
    seed: Seed = Field(0, ge=0, description="the run seed: every random stream derives from it (ipgnn.seeding)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Literal["auto"] | Annotated[int, Field(ge=1, le=MAX_THREADS)] = Field(
        "auto",
        description="the learner's torch threads; auto: torch's default, at most the cores this process may "
        "use less rollout workers (OMP_NUM_THREADS overrides); a warning says when the load "
        f"leaves fewer free (ipgnn.cpu); at most {MAX_THREADS}",
    )
    env: EnvConfig = Field(default_factory=EnvConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        """'auto' or 1 to :data:`MAX_THREADS`: more than any single machine's cores, and far inside the C int
        that torch.set_num_threads and OpenMP take (a larger number overflowed there)."""
        if v == "auto" and isinstance(v, str):
            return v
        try:
            n = None if isinstance(v, str) else _integer(v)
        except PydanticCustomError:
            n = None
        if n is None:
            raise ValueError(f"expected 'auto' or a number of threads, got {echo(v)}")
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(
                f"must be 'auto' or from 1 to {MAX_THREADS} (more than any machine's cores), got {echo(n)}"
            )
        return n

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------------
# Loading, overrides, saving


def _valid_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at ``loc`` (a path of section names) of the schema."""
    cls: Any = model
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)


def _field(loc: tuple) -> Any:
    """The schema's field at ``loc`` (a path of names), or None."""
    cls: Any = ExperimentConfig
    info = None
    for part in loc:
        info = cls.model_fields.get(part) if isinstance(part, str) and cls is not None else None
        if info is None:
            return None
        cls = info.annotation if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) else None
    return info


def _key(loc: tuple) -> str:
    key = ".".join(str(p) for p in loc) or "<top level>"
    return key if len(key) <= MAX_ECHO else key[:MAX_ECHO] + "..."


_BOUNDS = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


def _describe(err: dict, source: str) -> str:
    """One pydantic error as ``source: key: what was expected, got <the input, truncated>``."""
    loc = tuple(p for p in err["loc"] if p != "__root__")
    key = _key(loc)
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(ExperimentConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1])[:MAX_ECHO], valid, n=1)
        hint = f" (did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?)" if close else ""
        where = _key(loc[:-1]) if loc[:-1] else "the top level"
        return f"{source}: unknown key '{key}'{hint}; valid keys in {where}: {', '.join(valid)}"
    got = echo(err.get("input"))
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:] if msg else msg
    if kind in _BOUNDS:
        why = next((m.text for m in getattr(_field(loc), "metadata", ()) if isinstance(m, _Why)), None)
        reason = f" ({why})" if why and kind == "less_than_equal" else ""
        msg = f"must be {_BOUNDS[kind]} {next(iter(err['ctx'].values()))}, got {got}{reason}"
    elif kind.startswith(("int_", "float_", "bool_", "string_", "literal_")) or kind.endswith("_type"):
        msg = f"expected {msg.replace('input should be ', '')}, got {got}"
    return f"{source}: {key}: {msg}"


def _problems(lines: list[str]) -> ConfigError:
    """One error for all problems: the first :data:`MAX_ERRORS` lines, then how many more there are."""
    more = len(lines) - MAX_ERRORS
    return ConfigError("\n".join(lines[:MAX_ERRORS] + ([f"... and {more} more problems"] if more > 0 else [])))


def validate(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a nested dict against the schema, raising one :class:`ConfigError` for all problems."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (env, model, algo, ...), got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise _problems([_describe(e, source) for e in exc.errors()]) from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["--a.b=1", "c.d=x"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for arg in args:
        body = arg[2:] if arg.startswith("--") else arg
        shown = echo(arg)[1:-1] if len(arg) > MAX_ECHO else arg  # the override, truncated
        if "=" not in body:
            raise ConfigError(
                f"override '{shown}': expected the form --section.key=value (e.g. --train.total_steps=5000)"
            )
        key, _, text = body.partition("=")
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override '{shown}': empty key")
        try:
            value = yaml_load(text) if text != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{shown}': value is not valid YAML ({_yaml_problem(exc)})") from None
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{shown}': '{echo(p)[1:-1]}' is a value, not a section")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "options":
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):  # env.options merges too
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader with two YAML 1.2 behaviours: a key repeated in one mapping is an error (1.1
    silently keeps the last one, dropping a whole section), and ``1e38`` is a float as in YAML 1.2 (1.1
    needs ``1.0e+38`` and reads ``1e38`` as a string).

    And bounded, while the document is composed, before any Python object is built: nesting deeper than
    :data:`MAX_DEPTH` levels, more than :data:`MAX_NODES` values once aliases are expanded (a few hundred bytes
    of aliases can stand for billions of values), and an alias inside the collection it names (a cycle) are
    refused with the line. A key must be a plain value (not a ``? [a, b]`` list or mapping); merge keys
    (``<<: *base``) work, and the keys written after them override the merged ones."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if not alias:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels (a config has a handful)", mark
                )
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 0 if alias else 1
        if alias:
            if id(node) not in self._sizes:
                raise yaml.composer.ComposerError(
                    None, None, "an alias inside the collection it refers to (a cycle)", mark
                )
            size = self._sizes[id(node)]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else ()
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            size = self._sizes[id(node)] = 1 + sum(self._sizes[id(c)] for c in children)
        if size > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"more than {MAX_NODES} values once its aliases are expanded (an alias bomb?); "
                "a config has a few hundred",
                mark,
            )
        return node


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a key is a {kind} (a YAML complex key, '? ...'): config keys are plain names",
                key_node.start_mark,
            )
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *base': merged below; later keys override it
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{echo(key)} appears twice in one mapping (line {seen[key] + 1} and line "
                f"{key_node.start_mark.line + 1}): merge them, the first would be silently dropped",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line and column) and what, the input it quotes truncated."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return echo(str(exc), 2 * MAX_ECHO)
    what = "; ".join(p for p in (exc.context, exc.problem) if p)
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = what if len(what) <= 2 * MAX_ECHO else what[: 2 * MAX_ECHO] + "..."
    return where + what


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver(  # YAML 1.2's float: 1e38, 1E-3, .5, 1.
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$"
        r"|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    """YAML as configs are read everywhere (:class:`_StrictLoader`)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file ``path``: at most :data:`MAX_CONFIG_BYTES` bytes of UTF-8, read and parsed
    by :func:`yaml_load`, less its top-level keys that start with ``.`` (anchors for merge keys); every
    problem is one :class:`ConfigError` naming the file (and the line)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory: pass a YAML file in it (e.g. {path}/<name>.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (looked in {path.resolve().parent})")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc.strerror}): check its permissions") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MiB, the most a config may be (the largest in "
            "configs/ is 3 KB): pass the YAML config, not a data file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): pass a YAML config") from None
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty; a config needs at least its task (env.task) and a run length "
            "(train.total_steps): copy one from configs/"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("."))}  # anchors only


def _flatten(d: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        keys.add(key)
        if isinstance(v, dict):
            keys |= _flatten(v, key + ".")
    return keys


PRESETS = Path(__file__).parent / "algos" / "presets"  # one file per baseline: configs/algos/ links to them


def method_preset(name: Any) -> tuple[dict[str, Any], Path | None]:
    """The method file of ``algo.name`` (``ipgnn/algos/presets/<name>.yaml``: the settings that are the
    algorithm's own, e.g. PIC's gradient clipping and options) and its path, or ``({}, None)`` for a method
    defined by the schema's defaults alone (``ipsac``) or a name the schema will refuse."""
    path = PRESETS / f"{name}.yaml"
    if not isinstance(name, str) or not name.isidentifier() or not path.is_file():
        return {}, None
    return read_yaml(path), path


def load_config(
    path: str | Path | list[str | Path] | None = None, overrides: list[str] | dict | None = None
) -> ExperimentConfig:
    """Load ``path`` (YAML; or several, merged in order, later files overriding earlier ones), apply
    overrides, validate. Errors name the file (or override) that set the key.

    The method that ``algo.name`` selects is applied beneath all of them (:func:`method_preset`), so
    ``--algo.name=pic`` runs PIC as ``configs/algos/pic.yaml`` defines it, and any file or override can still
    change a value; layering that file by hand after the experiment file gives the same config."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    raw: dict[str, Any] = {}
    origin: dict[str, str] = {}  # dotted key -> the file that set it last
    for p in paths:
        layer = read_yaml(p)
        raw = deep_merge(raw, layer)
        origin.update({k: str(p) for k in _flatten(layer)})
    source = str(paths[-1]) if paths else "<defaults>"
    extra = {}
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        raw = deep_merge(raw, extra)
    override_keys = _flatten(extra)
    preset, preset_path = method_preset(
        (raw.get("algo") or {}).get("name") if isinstance(raw.get("algo"), dict) else None
    )
    if preset_path is not None:
        origin = {**{k: str(preset_path) for k in _flatten(preset)}, **origin}
        raw = deep_merge(preset, raw)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            key = ".".join(str(p) for p in e["loc"])
            if key in override_keys:
                src = f"command-line override --{_key(e['loc'])}"
            else:  # the file that set this key (or its closest parent), else the last file
                parts = key.split(".")
                src = next(
                    (origin[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in origin),
                    source,
                )
            lines.append(_describe(e, src))
        raise _problems(lines) from None


def check_options(
    options: dict[str, Any], schema: dict[str, type | tuple[type, ...]], task: str, section: str = "env.options"
) -> dict[str, Any]:
    """Check a task's ``env.options`` (or an algorithm's ``algo.options``: ``section``) against
    ``{name: accepted type(s)}``; an int is accepted for a float; errors name the key."""
    for k, v in options.items():
        if k not in schema:
            raise ConfigError(f"{section}.{k}: unknown option for '{task}' (valid: {', '.join(schema)})")
        kinds = schema[k] if isinstance(schema[k], tuple) else (schema[k],)
        is_bool = isinstance(v, bool)
        if float in kinds and isinstance(v, int) and not is_bool:
            v = options[k] = float(v)
        if not isinstance(v, kinds) or (is_bool and bool not in kinds):
            names = " or ".join(t.__name__ for t in kinds)
            raise ConfigError(f"{section}.{k}: expected {names}, got {v!r}")
    return options


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write ``cfg`` as YAML to ``path`` atomically (a temporary file in the same directory, flushed and renamed
    over it): a full disk or a kill mid-write leaves the previous file whole."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
