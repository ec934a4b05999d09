"""Experiment configuration: a typed schema, YAML loading, dotted overrides.

A config is four independent parts kept apart as in BenchMARL: ``env`` (the task and its
communication graph), ``model`` (network sizes), ``algo`` (the loss and its hyper-parameters) and
``train``/``replay``/``logger`` (the experiment). Defaults are the paper's (Table 2, app. D; sec. 5.2
for the network); CPU-sized runs override them in their YAML or on the command line.

Every error names the file, the dotted key and what was expected::

    configs/x.yaml: model.hidden: expected an integer, got 'big'
    configs/x.yaml: unknown key 'model.hiden' (did you mean 'model.hidden'?)

Overrides use the form ``wandb agent`` passes: ``--train.total_steps=5000`` or ``model.rounds=3``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator


class ConfigError(ValueError):
    """A configuration problem, with the file and key it comes from."""


class _Section(BaseModel):
    # allow_inf_nan=False: an lr, alpha or scale of .inf or .nan is refused with the key that holds it
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class GraphConfig(_Section):
    """How the communication graph is built each step (sec. 5.3)."""

    kind: Literal["env", "knn", "full"] = Field(
        "knn", description="env: the task's own static graph; knn: k nearest agents by position; full: all pairs"
    )
    k: int = Field(4, ge=1, description="neighbours per agent for kind=knn (paper: 4 below 30 agents, 8 above)")
    symmetric: bool = Field(
        False, description="knn only: add j->i whenever i->j exists (in-degree is then no longer exactly k)"
    )


class EnvConfig(_Section):
    task: str = Field("mpe_spread", description="a name from ipgnn.envs.TASKS")
    num_agents: int = Field(3, ge=1)
    max_steps: int = Field(25, ge=1, description="episode length (app. D: 25 for MPE/MAgent, 100 for CityFlow)")
    continuous_actions: bool = False
    num_envs: int = Field(
        1,
        ge=1,
        description="environments stepped together, for tasks with a batched "
        "interface (the tensor MPE tasks); every one counts as env steps",
    )
    graph: GraphConfig = Field(default_factory=GraphConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="task-specific options, checked by the task")


class ModelConfig(_Section):
    """Sizes of the intention propagation network and the critics (sec. 5.2, app. B.2)."""

    hidden: int = Field(128, ge=1, description="width of every layer (Table 2: 128)")
    rounds: int = Field(
        2,
        ge=0,
        description="M, mean-field propagation rounds with shared weights (eq. 6); the paper's 'hop size' h = 2",
    )
    hops: int = Field(1, ge=1, description="radius of the neighbourhood each round reads (1 = the graph itself)")
    heads: int = Field(1, ge=1, description="attention heads of the propagation layer")
    critic_state_layers: int = Field(0, ge=0, description="extra state-only GNN layers in Q and V")

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
    gamma: float = Field(0.95, ge=0.0, le=1.0, description="discount (Table 2)")
    reward_scale: float = Field(
        1.0,
        gt=0.0,
        description="every algorithm learns from r_i * reward_scale (stored so "
        "in the replay buffer); returns and metrics stay unscaled",
    )
    tau: float = Field(0.01, gt=0.0, le=1.0, description="Polyak coefficient of the target value network")
    lr: float = Field(0.01, gt=0.0, description="learning rate of all networks (Table 2)")
    policy_lr: float | None = Field(None, gt=0.0)
    critic_lr: float | None = Field(None, gt=0.0)
    value_lr: float | None = Field(None, gt=0.0)
    alpha: float = Field(0.2, gt=0.0, description="entropy weight (Table 2 'regularizer factor')")
    autotune_alpha: bool = Field(False, description="tune alpha towards target_entropy instead of fixing it")
    target_entropy: float | None = Field(
        None, description="per-agent target entropy; None: -action_dim (continuous), 0.6*log|A| (discrete)"
    )
    alpha_lr: float | None = Field(None, gt=0.0)
    discrete_neighbour_actions: Literal["gumbel", "probs"] = Field(
        "gumbel", description="what the critic sees on edges in the policy/value losses for discrete actions"
    )
    gumbel_temperature: float = Field(1.0, gt=0.0)
    target_update_interval: int = Field(1, ge=1, description="gradient steps between Polyak updates (Table 2: 1)")
    max_grad_norm: float | None = Field(None, gt=0.0, description="clip each network's gradient norm")
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
        raise ValueError(f"expected a number of transitions or a size like '8GiB' or '500MB', got {text!r}")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).upper()])


class ReplayConfig(_Section):
    capacity: int | str = Field(
        1_000_000,
        description="transitions (Table 2: 1e6), or a memory budget such as "
        "'8GiB' that the trainer turns into transitions",
    )

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            parse_bytes(v)
        elif v < 1:
            raise ValueError("must be at least 1 transition")
        return v

    batch_size: int = Field(1024, ge=1, description="transitions per minibatch (Table 2: 1024)")
    device: Literal["auto", "cpu", "learner"] = Field(
        "auto",
        description="where the buffer lives and minibatches are assembled: 'learner' (the training "
        "device, e.g. the GPU), 'cpu', or 'auto' (the learner's device when the buffer takes "
        "at most half of its free memory, else the CPU)",
    )


class TrainConfig(_Section):
    total_steps: int = Field(1_000_000, ge=1, description="environment steps")
    learning_starts: int = Field(1000, ge=0, description="uniform random steps before learning")
    update_every: int = Field(
        100,
        ge=1,
        description="environment steps between update phases (Table 2, i.e. "
        "PIC's reference code: steps_per_actor_update=100)",
    )
    gradient_steps: int = Field(
        8, ge=0, description="gradient steps per update phase (Table 2 / PIC's code: updates_per_step=8)"
    )
    eval_every: int = Field(10_000, ge=0, description="environment steps between evaluations (0: never)")
    eval_episodes: int = Field(5, ge=1)
    checkpoint_every: int = Field(10_000, ge=0, description="environment steps between checkpoints (0: at end only)")
    save_replay: bool = Field(True, description="store the replay buffer with checkpoints so resume is exact")
    log_every: int = Field(1000, ge=1, description="environment steps between logged training points")
    schedule_reference_steps: int | None = Field(
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

    workers: int = Field(
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
    progress: bool = Field(True, description="show a progress bar on the console")


class ExperimentConfig(_Section):
    name: str = "ipgnn"
    seed: int = Field(0, ge=0, description="the run seed: every random stream derives from it (ipgnn.seeding)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto",
        description="the learner's torch threads; auto: torch's default, at most the cores this process may "
        "use less rollout workers (OMP_NUM_THREADS overrides); a warning says when the load "
        "leaves fewer free (ipgnn.cpu)",
    )
    env: EnvConfig = Field(default_factory=EnvConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    logger: LoggerConfig = Field(default_factory=LoggerConfig)

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


def _describe(err: dict, source: str) -> str:
    loc = tuple(p for p in err["loc"] if p != "__root__")
    key = ".".join(str(p) for p in loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        valid = _valid_keys(ExperimentConfig, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?)" if close else ""
        where = ".".join(map(str, loc[:-1])) or "the top level"
        return f"{source}: unknown key '{key}'{hint}; valid keys in {where}: {', '.join(valid)}"
    got = err.get("input")
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    if err["type"].startswith(("int_", "float_", "bool_", "string_", "literal_")):
        msg = f"expected {msg.replace('input should be ', '')}, got {got!r}"
    return f"{source}: {key}: {msg}"


def validate(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a nested dict against the schema, raising one :class:`ConfigError` for all problems."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (env, model, algo, ...), got {type(raw).__name__}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(e, source) for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Turn ``["--a.b=1", "c.d=x"]`` into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for arg in args:
        body = arg[2:] if arg.startswith("--") else arg
        if "=" not in body:
            raise ConfigError(
                f"override '{arg}': expected the form --section.key=value (e.g. --train.total_steps=5000)"
            )
        key, _, text = body.partition("=")
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override '{arg}': empty key")
        try:
            value = yaml_load(text) if text != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{arg}': value is not valid YAML ({exc})") from None
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{arg}': '{p}' is a value, not a section")
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
    needs ``1.0e+38`` and reads ``1e38`` as a string)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"'{key}' appears twice in one mapping (line {seen[key] + 1} and line "
                f"{key_node.start_mark.line + 1}): merge them, the first would be silently dropped",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


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
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a directory: pass a YAML file in it (e.g. {path}/<name>.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (looked in {path.resolve().parent})")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): pass a YAML config") from None
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(
            f"{path}: the file is empty; a config needs at least its task (env.task) and a run length "
            "(train.total_steps): copy one from configs/"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    return raw


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
                src = f"command-line override --{key}"
            else:  # the file that set this key (or its closest parent), else the last file
                parts = key.split(".")
                src = next(
                    (origin[".".join(parts[:i])] for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in origin),
                    source,
                )
            lines.append(_describe(e, src))
        raise ConfigError("\n".join(lines)) from None


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
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
