"""N = 1225 end to end: a short run of configs/grid35x35.yaml (35x35 grid, real SUMO) on the CI machine,
with the replay buffer sized from the config's memory budget."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from conftest import CONFIGS


@pytest.mark.slow
def test_grid35x35_trains_end_to_end_within_memory(tmp_path):
    env = dict(os.environ, IPGNN_CACHE=str(tmp_path / "cache"), WANDB_MODE="offline", WANDB_SILENT="true")
    cmd = [
        sys.executable,
        "-m",
        "ipgnn.cli_entry",
        "train",
        "--config",
        str(CONFIGS / "grid35x35.yaml"),
        "--env.max_steps=10",
        "--train.total_steps=30",
        "--train.learning_starts=10",
        "--train.update_every=10",
        "--train.gradient_steps=1",
        "--replay.batch_size=2",
        "--model.hidden=16",
        "--train.eval_episodes=1",
        "--train.eval_every=0",
        "--train.checkpoint_every=0",
        "--logger.mode=disabled",
        "--logger.progress=false",
        f"--logger.run_root={tmp_path / 'runs'}",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "30 transitions of 1225 agents" in res.stderr and "int16" in res.stderr
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["env_step"] == 30 and out["eval/average_travel_time"] > 0
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    assert peak_gib < 8, f"peak resident memory {peak_gib:.1f} GiB"


def test_grid35x35_budget_resolves_to_a_buffer_that_fits(tmp_path):
    """The config's '12GiB' becomes a number of transitions whose allocation is at most 12 GiB."""
    import torch

    from ipgnn.config import load_config, parse_bytes
    from ipgnn.replay import GraphReplayBuffer

    cfg = load_config(CONFIGS / "grid35x35.yaml")
    budget = parse_bytes(cfg.replay.capacity)
    # the traffic task's sizes on the 35x35 grid (28 features, 4 phases, a static road graph)
    sizing = dict(
        num_agents=1225,
        obs_dim=28,
        action_dim=4,
        discrete=True,
        max_edges=4760,
        static_graph=True,
        has_action_mask=True,
        obs_dtype=torch.int16,
        episode_length=100,
    )
    per = GraphReplayBuffer.bytes_for(10_000, **sizing) / 10_000
    assert 150_000 < budget / per < 300_000
    full = GraphReplayBuffer.bytes_for(1_000_000, **sizing)
    assert full > 4 * budget  # the paper's 10^6 would not fit a 24 GiB machine
    old = GraphReplayBuffer.bytes_for(1_000_000, **{**sizing, "obs_dtype": torch.float32, "episode_length": None})
    assert old / full > 2.5  # observations once, as int16
