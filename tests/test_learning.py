"""IP-SAC learns: on cooperative navigation (3 agents, mpe2 simple_spread_v3, discrete actions), a short
fixed-seed CPU run's greedy policy beats a uniformly random policy on the same 20 evaluation episodes
by a clear margin: a team return higher (less negative) by at least 10 % of the random policy's.

Measured under the independent seed streams of ipgnn.seeding (seed 0's evaluation episodes: random
-74.4), on 2 cores, in the baselines' learning setting (test_baselines.LEARNING: batch 128, 64 units,
lr 3e-3, the reference schedule): 20 000 steps gave -70.5 (+5 %) with Table 2's alpha 0.2, -70.3 with a
tuned alpha, -66.5 (+11 %) with alpha 0.02; 40 000 steps with alpha 0.02 give -58.1 (+22 %). IP-SAC
learns this small global-observation task more slowly than MADDPG and PIC (-56 to -57 after 20 000
steps, README); under the earlier evaluation episodes (random -83.6) 8 000 steps had passed."""

import pytest

from ipgnn.config import load_config

from conftest import CONFIGS, learned_and_random_returns

MARGIN = 0.10
EPISODES = 20
MARGIN_ATT = 0.03  # 3 % below FixedTime's average travel time


@pytest.mark.slow
def test_ip_sac_beats_random_on_cooperative_navigation(tmp_path):
    from test_baselines import LEARNING

    cfg = load_config(CONFIGS / "mpe_spread_small.yaml", LEARNING + ["--algo.alpha=0.02"])
    learned, rand = learned_and_random_returns(cfg, tmp_path / "run", EPISODES)
    print(f"greedy IP-SAC return {learned:.2f} vs random {rand:.2f}")
    assert learned > rand + MARGIN * abs(rand), (learned, rand)


@pytest.mark.slow
def test_ip_sac_beats_random_on_tensor_navigation_30(tmp_path):
    """configs/mpe_spread30.yaml (the paper's locally observed cooperative navigation, N = 30, 8 batched
    environments), CPU-sized: batch 64, lr 1e-3, the reference schedule (8 gradient steps every 100
    environment steps). Under the independent seed streams of ipgnn.seeding, seed 0's evaluation episodes
    give random -464.9; the same trajectory (results/critic_field_spread30, critic_state_layers=0, seed 0)
    gave -477.7, -483.4, -418.5 and -381.4 after 4 000, 8 000, 12 000 and 16 000 steps: 12 000 steps (the
    earlier length, +13.8 % under the old seeds) clears the 10 % margin by 0.1, 16 000 by 18 % (about 5 min
    on 2 cores beside another run)."""
    cfg = load_config(
        CONFIGS / "mpe_spread30.yaml",
        [
            "--train.total_steps=16000",
            "--train.learning_starts=2000",
            "--replay.batch_size=64",
            "--algo.lr=0.001",
            "--train.eval_every=0",
            "--train.eval_episodes=16",
            "--train.checkpoint_every=0",
            "--logger.mode=disabled",
            "--logger.progress=false",
            f"--logger.run_root={tmp_path}",
        ],
    )
    learned, rand = learned_and_random_returns(cfg, tmp_path / "run", 16)
    print(f"greedy IP-SAC return {learned:.2f} vs random {rand:.2f}")
    assert learned > rand + MARGIN * abs(rand), (learned, rand)


HANGZHOU_CPU = [
    "--train.total_steps=4000",
    "--train.eval_every=0",
    "--train.eval_episodes=1",
    "--train.checkpoint_every=0",
    "--logger.mode=disabled",
    "--logger.progress=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sumo", "cityflow"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ip_sac_beats_fixed_time_on_real_hangzhou_traffic(tmp_path, monkeypatch, engine, seed):
    """configs/hangzhou16.yaml on the real Hangzhou 4x4 data (16 intersections, 100 decisions of 10 s), on
    a real engine, with the reference schedule (8 gradient steps every 100 decisions) and the config's
    CPU-sized batch: after 4000 decisions the greedy policy's average travel time is below FixedTime's
    on the same evaluation episode by at least MARGIN_ATT. Measured on 2 cores under the independent seed
    streams of ipgnn.seeding (the runs of results/critic_field_hangzhou16 and results/hangzhou16_cityflow,
    which pass through the same trajectory): SUMO 1.28 seed 0 291.6 s against FixedTime 313.3 s (-6.9 %),
    seed 1 287.8 s against 312.6 s (-7.9 %); CityFlow seed 0 288.1 s and seed 1 295.8 s against 312.0 s
    (-7.7 %, -5.2 %). After 3000 decisions the SUMO seeds were only 0.7-0.9 % below FixedTime: the margin
    needs 4000. About 2-3 min each (MaxPressure 272-273 s on SUMO, 279.6 s on CityFlow; the full
    10 000-decision config beats it on both, README results)."""
    from test_scenario import need

    if engine == "sumo":
        pytest.importorskip("libsumo")
    else:
        pytest.importorskip("cityflow")
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path / "cache"))
    from ipgnn.trainer import Trainer

    cfg = load_config(
        CONFIGS / "hangzhou16.yaml",
        [
            f"--env.options.scenario={need('hangzhou_4x4')}",
            f"--env.options.engine={engine}",
            f"--seed={seed}",
            *HANGZHOU_CPU,
        ],
    )
    trainer = Trainer.from_config(cfg, tmp_path / "run")
    att = trainer.train()["eval/average_travel_time"]
    trainer.close()
    fixed, pressure = (trainer.references[k]["average_travel_time"] for k in ("FixedTime", "MaxPressure"))
    print(f"{engine} seed {seed}: greedy IP-SAC ATT {att:.1f} s, FixedTime {fixed:.1f} s, MaxPressure {pressure:.1f} s")
    assert att < (1.0 - MARGIN_ATT) * fixed, (att, fixed, pressure)
