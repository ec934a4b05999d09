"""The strict, bounded config schema (issue 29, deliverable 4), fuzzed through ``ipgnn-train`` in-process.

Every malformed or oversized input (a boolean where a number is meant, a zero or huge size, a seed or thread
count beyond what C code takes, a minibatch larger than the buffer, a YAML complex key, 5000-deep nesting, an
alias bomb, a 2 MiB file) must end in exit code 2 with one ``error:`` naming the key or file, echo at most a
few hundred characters of the input, and leave nothing behind: no run directory under ``logger.run_root``.
Valid YAML that was refused before (the merge key ``<<:``) and valid edge values are accepted."""

import time

import pytest

import ipgnn.trainer  # noqa: F401 - imported up front: the timings below measure the parse, not train_main's import
from ipgnn.cli import train_main
from ipgnn.config import MAX_DEPTH, MAX_NODES, MAX_THREADS
from ipgnn.seeding import MAX_SEED

from conftest import CONFIGS, clean_failure, tiny

GOOD = str(CONFIGS / "mpe_spread_small.yaml")


def alias_bomb(levels: int = 9) -> str:
    """'Billion laughs': ``levels`` anchored lists of nine aliases each, 9**levels values in ~350 bytes."""
    names = "abcdefghijklmnop"
    text = "a: &a [x,x,x,x,x,x,x,x,x]\n"
    for prev, name in zip(names[: levels - 1], names[1:levels]):
        text += f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]\n"
    return text + f"env: {{options: {{x: *{names[levels - 1]}}}}}\n"


def nested(depth: int) -> str:
    return "env:\n  options:\n    x: " + "[" * depth + "]" * depth + "\n"


# (id, file contents, what the message must name): each a config file passed as --config
BAD_FILES = [
    # booleans are not integers, for every kind of integer field (a width, a count, an interval, a seed ...)
    ("bool-hidden", "model:\n  hidden: true\n", "model.hidden: expected an integer, got True"),
    ("bool-heads", "model:\n  heads: true\n", "model.heads: expected an integer"),
    ("bool-rounds", "model:\n  rounds: false\n", "model.rounds: expected an integer"),
    ("bool-num-agents", "env:\n  num_agents: true\n", "env.num_agents: expected an integer"),
    ("bool-max-steps", "env:\n  max_steps: true\n", "env.max_steps: expected an integer"),
    ("bool-num-envs", "env:\n  num_envs: true\n", "env.num_envs: expected an integer"),
    ("bool-k", "env:\n  graph:\n    k: true\n", "env.graph.k: expected an integer"),
    ("bool-total-steps", "train:\n  total_steps: true\n", "train.total_steps: expected an integer"),
    ("bool-gradient-steps", "train:\n  gradient_steps: true\n", "train.gradient_steps: expected an integer"),
    ("bool-schedule-ref", "train:\n  schedule_reference_steps: true\n", "train.schedule_reference_steps"),
    ("bool-target-update", "algo:\n  target_update_interval: true\n", "algo.target_update_interval"),
    ("bool-batch", "replay:\n  batch_size: true\n", "replay.batch_size: expected an integer"),
    ("bool-capacity", "replay:\n  capacity: true\n", "replay.capacity"),
    ("bool-workers", "rollout:\n  workers: true\n", "rollout.workers: expected an integer"),
    ("bool-seed", "seed: true\n", "seed: expected an integer, got True"),
    ("bool-threads", "threads: true\n", "threads: expected 'auto' or a number"),
    # ... nor numbers, nor are numbers or strings booleans
    ("bool-lr", "algo:\n  lr: true\n", "algo.lr: expected a number, got True"),
    ("bool-gamma", "algo:\n  gamma: false\n", "algo.gamma: expected a number"),
    ("bool-policy-lr", "algo:\n  policy_lr: true\n", "algo.policy_lr: expected a number"),
    ("int-for-bool", "logger:\n  progress: 1\n", "logger.progress: expected true or false, got 1"),
    ("string-for-bool", "train:\n  save_replay: 'true'\n", "train.save_replay: expected true or false"),
    ("string-for-int", "model:\n  hidden: '64'\n", "model.hidden: expected an integer, got '64'"),
    ("fraction-for-int", "model:\n  hidden: 64.5\n", "model.hidden: expected an integer, got 64.5"),
    # sizes are positive
    ("zero-hidden", "model:\n  hidden: 0\n", "model.hidden: must be at least 1, got 0"),
    ("negative-heads", "model:\n  heads: -2\n", "model.heads: must be at least 1"),
    ("zero-num-envs", "env:\n  num_envs: 0\n", "env.num_envs: must be at least 1"),
    ("zero-workers", "rollout:\n  workers: 0\n", "rollout.workers: must be at least 1"),
    ("zero-eval-episodes", "train:\n  eval_episodes: 0\n", "train.eval_episodes: must be at least 1"),
    ("negative-batch", "replay:\n  batch_size: -5\n", "replay.batch_size: must be at least 1"),
    ("zero-capacity", "replay:\n  capacity: 0\n", "replay.capacity: must be from 1"),
    # ... and bounded, with the reason
    ("huge-hidden", "model:\n  hidden: 1000000\n", "model.hidden: must be at most 16384"),
    ("huge-agents", "env:\n  num_agents: 10000000\n", "env.num_agents: must be at most 65536"),
    ("huge-num-envs", "env:\n  num_envs: 1000000\n", "env.num_envs: must be at most 65536"),
    ("huge-rounds", "model:\n  rounds: 1000\n", "model.rounds: must be at most 64"),
    ("huge-workers", "rollout:\n  workers: 100000\n", "rollout.workers: must be at most 1024"),
    ("huge-total-steps", "train:\n  total_steps: 10000000000000\n", "train.total_steps: must be at most"),
    ("huge-k", "env:\n  graph:\n    k: 1000000000\n", "env.graph.k: must be at most 65536"),
    # seeds in range, threads bounded: never 'Overflow when unpacking long long'
    ("seed-2**64", f"seed: {2**64}\n", f"seed: must be at most {MAX_SEED}"),
    ("seed-2**63", f"seed: {2**63}\n", f"seed: must be at most {MAX_SEED}"),
    ("seed-negative", "seed: -1\n", "seed: must be at least 0"),
    ("threads-2**70", f"threads: {2**70}\n", f"threads: must be 'auto' or from 1 to {MAX_THREADS}"),
    ("threads-zero", "threads: 0\n", "threads: must be 'auto' or from 1"),
    ("threads-word", "threads: many\n", "threads: expected 'auto' or a number of threads, got 'many'"),
    # a replay budget holds at least one transition; a minibatch fits the buffer
    ("capacity-0GiB", "replay:\n  capacity: 0GiB\n", "replay.capacity: a budget of '0GiB'"),
    ("capacity-1B", "replay:\n  capacity: 1B\n", "replay.capacity: a budget of '1B'"),
    ("capacity-2PB", "replay:\n  capacity: 2000TB\n", "outside 1 KiB to 1 PiB"),
    ("capacity-inf-digits", "replay:\n  capacity: " + "9" * 400 + "GiB\n", "too large a size"),
    ("capacity-unit", "replay:\n  capacity: 8 parsecs\n", "replay.capacity: expected a number of transitions"),
    ("batch-over-capacity", "replay:\n  capacity: 100\n  batch_size: 1000\n", "replay.batch_size"),
    # YAML: complex keys, depth, aliases, size
    ("complex-key-list", "? [a, b]\n: 1\n", "line 1, column 3: a key is a list"),
    ("complex-key-mapping", "model:\n  ? {hidden: 1}\n  : 1\n", "line 2, column 5: a key is a mapping"),
    ("nesting-5000-flow", nested(5000), f"nested deeper than {MAX_DEPTH} levels"),
    ("nesting-1000-block", "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 1000)), "nested deeper"),
    ("alias-cycle", "env:\n  options:\n    x: &a [1, *a]\n", "line 3, column 15: an alias inside the collection"),
    ("alias-bomb", alias_bomb(), f"more than {MAX_NODES} values once its aliases are expanded"),
    ("undefined-alias", "model: *" + "q" * 5000 + "\n", "found undefined alias"),
    ("duplicate-after-merge", "b: &b {hidden: 8}\nmodel:\n  <<: *b\n  rounds: 1\n  rounds: 2\n", "appears twice"),
    ("merge-of-scalar", "model:\n  <<: 3\n", "expected a mapping or list of mappings for merging"),
    ("two-MiB-file", "model:\n  hidden: 64\n" + "#" * (2 * 2**20) + "\n", "larger than 1 MiB"),
    # echoed input is truncated
    ("long-value", "model:\n  hidden: '" + "x" * 100_000 + "'\n", "model.hidden: expected an integer, got 'xxx"),
    ("long-key", "model:\n  " + "y" * 1000 + ": 1\n", "unknown key 'model.yyy"),  # YAML: keys < 1024
    ("many-unknown-keys", "".join(f"k{i}: 1\n" for i in range(500)), "and 490 more problems"),
]


def _no_run(root) -> None:
    assert not root.exists() or not any(root.iterdir()), sorted(root.rglob("*"))


@pytest.mark.parametrize("text,names", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_config_file_is_refused_before_anything_is_written(tmp_path, capsys, text, names):
    path, root = tmp_path / "bad.yaml", tmp_path / "runs"
    path.write_text(text)
    err = clean_failure(train_main(["--config", str(path), f"--logger.run_root={root}"]), capsys, names, code=2)
    assert "bad.yaml" in err or "--" in err  # the file (or the override) that set the key
    _no_run(root)


# (id, overrides on a good config, what the message must name)
BAD_OVERRIDES = [
    ("bool-hidden", ["--model.hidden=true"], "command-line override --model.hidden: model.hidden: expected an integer"),
    ("bool-total-steps", ["--train.total_steps=yes"], "train.total_steps: expected an integer, got True"),
    ("seed-2**64", [f"--seed={2**64}"], f"seed: must be at most {MAX_SEED}"),
    ("threads-2**70", [f"--threads={2**70}"], "threads: must be 'auto' or from 1 to 4096"),
    ("capacity-0GiB", ["--replay.capacity=0GiB"], "replay.capacity: a budget of '0GiB'"),
    ("batch-over-capacity", ["--replay.capacity=64", "--replay.batch_size=65"], "replay.batch_size"),
    ("nested-value", ["--env.options.x=" + "[" * 5000 + "]" * 5000], "nested deeper than 64 levels"),
    ("long-key", ["--model." + "z" * 10_000 + "=1"], "unknown key 'model.zzz"),
    ("long-bad-yaml", ["--model.hidden={" + "w" * 10_000], "value is not valid YAML"),
    ("long-no-equals", ["--model." + "v" * 10_000], "expected the form --section.key=value"),
]


@pytest.mark.parametrize("overrides,names", [c[1:] for c in BAD_OVERRIDES], ids=[c[0] for c in BAD_OVERRIDES])
def test_bad_override_is_refused_before_anything_is_written(tmp_path, capsys, overrides, names):
    root = tmp_path / "runs"
    rc = train_main(["--config", GOOD, f"--logger.run_root={root}", *overrides])
    clean_failure(rc, capsys, names, code=2)
    _no_run(root)


def test_batch_over_capacity_names_both_numbers(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("replay:\n  capacity: 100\n  batch_size: 1000\n")
    err = clean_failure(train_main(["--config", str(path)]), capsys, "replay.batch_size", code=2)
    assert "1000 transitions" in err and "replay.capacity (100 transitions)" in err


def test_alias_bomb_fails_fast_and_short(tmp_path, capsys):
    """A ~350-byte document standing for 9**9 (387 million) values is refused while it is parsed."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert path.stat().st_size < 400
    start = time.perf_counter()
    rc = train_main(["--config", str(path), f"--logger.run_root={tmp_path / 'runs'}"])
    assert time.perf_counter() - start < 2
    err = clean_failure(rc, capsys, "alias", code=2)
    assert len(err) < 4000 and err.count("\n") == 1, err


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 500_000])
def test_deep_nesting_fails_fast(tmp_path, capsys, depth):
    path = tmp_path / "deep.yaml"
    path.write_text(nested(depth))
    start = time.perf_counter()
    rc = train_main(["--config", str(path)])
    assert time.perf_counter() - start < 2
    clean_failure(rc, capsys, f"line 3, column 69: nested deeper than {MAX_DEPTH} levels", code=2)


def _printed(capsys, argv) -> str:
    assert train_main([*argv, "--print-config"]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_merge_keys_are_accepted_and_explicit_keys_win(tmp_path, capsys):
    path = tmp_path / "merge.yaml"
    path.write_text(".base: &b {hidden: 32, rounds: 3}\nmodel: {<<: *b, hidden: 64}\nrollout:\n  <<: {workers: 2}\n")
    out = _printed(capsys, ["--config", str(path)])
    assert "hidden: 64" in out and "rounds: 3" in out and "workers: 2" in out and "base" not in out
    path.write_text("base: &b {hidden: 32}\nmodel: {<<: *b}\n")  # a key for anchors starts with '.'
    clean_failure(train_main(["--config", str(path)]), capsys, "unknown key 'base'", code=2)


@pytest.mark.parametrize(
    "overrides,expect",
    [
        ([f"--seed={MAX_SEED}"], f"seed: {MAX_SEED}"),
        ([f"--threads={MAX_THREADS}"], f"threads: {MAX_THREADS}"),
        (["--train.total_steps=1e6"], "total_steps: 1000000\n"),  # YAML 1.2 reads 1e6 as a float: a whole one
        (["--algo.lr=1"], "lr: 1.0\n"),  # an integer where a float is meant
        (["--model.hidden=64", "--replay.capacity=1KiB", "--replay.batch_size=1"], "capacity: 1KiB"),
        (["--replay.capacity=1024", "--replay.batch_size=1024"], "batch_size: 1024"),
    ],
    ids=["seed-max", "threads-max", "steps-1e6", "int-for-float", "capacity-1KiB", "batch-equals-capacity"],
)
def test_valid_edges_are_accepted(tmp_path, capsys, overrides, expect):
    assert expect in _printed(capsys, ["--config", GOOD, *overrides])


def test_budget_below_a_minibatch_of_this_task_is_refused_with_the_size_to_give(tmp_path, capsys):
    """'2KiB' passes the schema's floor (1 KiB) but holds 4 transitions of this task, fewer than a minibatch:
    refused when the task's transition size is known, before the buffer is allocated or a step is taken."""
    root = tmp_path / "runs"
    rc = train_main(["--config", GOOD, *tiny(tmp_path), "--replay.capacity=2KiB"])
    err = clean_failure(rc, capsys, "replay.capacity: a budget of '2KiB' holds 4 transitions", code=2)
    assert "replay.batch_size: 32" in err and "give at least '1MiB'" in err
    assert not list(root.glob("*/checkpoints")) and not list(root.glob("*/metrics.jsonl"))


def test_buffer_beyond_memory_is_refused_before_allocation(tmp_path, capsys):
    root = tmp_path / "runs"
    big = ["--replay.capacity=100000000000", "--train.total_steps=100000000000"]
    start = time.perf_counter()
    rc = train_main(["--config", GOOD, *tiny(tmp_path), *big])
    assert time.perf_counter() - start < 60  # not an allocation of 27 TB
    err = clean_failure(rc, capsys, "replay.capacity: 100000000000 transitions of 3 agents need", code=2)
    assert "MemAvailable" in err and "set replay.capacity to at most" in err and "GiB'" in err
    assert not list(root.glob("*/checkpoints")) and not list(root.glob("*/metrics.jsonl"))
