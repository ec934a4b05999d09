"""ipgnn.analysis (the rounds, fixed point, projection and figures behind the embedding notebook) and
ipgnn.interpret (app. C.3 policy interpretation), on hand-built networks and tiny real checkpoints."""

import csv
import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch_geometric.data import Batch, Data

import ipgnn.interpret as interpret_mod
from ipgnn import analysis, checkpoint
from ipgnn.config import validate
from ipgnn.graphs import expand_hops
from ipgnn.interpret import (
    EPSILON,
    Recording,
    action_movements,
    euclidean_distance,
    interval_rows,
    kl_divergence,
    main,
    movement_table,
    movement_volume,
    normalise,
)
from ipgnn.nn.propagation import IntentionPropagationNetwork
from ipgnn.runs import load_run
from ipgnn.traffic import load_scenario
from ipgnn.traffic.generate import materialise

GRID = {"kind": "grid", "rows": 2, "cols": 2, "rate": 600, "seed": 0}


def traffic_raw(**train):
    """A seconds-long traffic run on a 2x2 generated grid over SUMO (10 decisions per episode)."""
    return {
        "name": "tiny_traffic",
        "seed": 0,
        "device": "cpu",
        "env": {
            "task": "traffic",
            "num_agents": 4,
            "max_steps": 10,
            "graph": {"kind": "env"},
            "options": {"scenario": dict(GRID), "engine": "sumo"},
        },
        "model": {"hidden": 16, "rounds": 2},
        "replay": {"capacity": 1000, "batch_size": 16},
        "train": {
            "total_steps": 60,
            "learning_starts": 20,
            "update_every": 10,
            "gradient_steps": 1,
            "eval_every": 0,
            "eval_episodes": 1,
            "checkpoint_every": 0,
            "log_every": 20,
            "save_replay": False,
        }
        | train,
        "logger": {"mode": "disabled", "progress": False},
    }


def mpe_raw():
    return {
        "name": "tiny_mpe",
        "seed": 0,
        "device": "cpu",
        "env": {"task": "mpe_spread", "num_agents": 3, "max_steps": 5, "graph": {"kind": "knn", "k": 2}},
        "model": {"hidden": 16, "rounds": 2, "heads": 2},
        "replay": {"capacity": 100, "batch_size": 16},
        "train": {
            "total_steps": 10,
            "learning_starts": 5,
            "eval_every": 0,
            "checkpoint_every": 0,
            "save_replay": False,
        },
        "logger": {"mode": "disabled", "progress": False},
    }


def untrained_checkpoint(raw, run_dir):
    """A real checkpoint of a freshly initialised learner (what the analysis needs, without training)."""
    from ipgnn.trainer import Trainer

    trainer = Trainer.from_config(validate(raw), run_dir)
    try:
        return trainer.save_checkpoint()
    finally:
        trainer.close()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path_factory.getbasetemp() / "ipgnn-cache"))


def small_graph(n=6, obs_dim=5, num_actions=4):
    """A ring of n agents plus one chord, with positions and an action mask."""
    src = torch.arange(n)
    ring = torch.stack([src, (src + 1) % n])
    ei = torch.cat([ring, ring.flip(0), torch.tensor([[0], [3]])], 1)
    mask = torch.ones(n, num_actions, dtype=torch.bool)
    mask[0, -1] = False
    return Data(x=torch.randn(n, obs_dim), edge_index=ei, pos=torch.randn(n, 2), action_mask=mask)


def small_net(rounds=3, hops=1, heads=2, hidden=8):
    torch.manual_seed(0)
    return IntentionPropagationNetwork(5, 4, True, hidden=hidden, rounds=rounds, hops=hops, heads=heads).eval()


# ------------------------------------------------------------------------------------------------
# propagation trace


@pytest.mark.parametrize("hops", [1, 2])
def test_trace_shapes_and_attention_sums_to_one(hops):
    net, data = small_net(rounds=3, hops=hops), small_graph()
    tr = analysis.propagation_trace(net, data, extra_rounds=2)
    assert tr.intentions.shape == (3 + 2 + 1, 6, 8) and tr.num_rounds == 5 and tr.trained_rounds == 3
    assert len(tr.attention) == 5
    expected_edges = expand_hops(data.edge_index, 6, hops)
    for ei, alpha in tr.attention:
        assert torch.equal(ei, expected_edges) and alpha.shape == (ei.size(1), 2)
        sums = torch.zeros(6, 2).index_add_(0, ei[1], alpha)
        receivers = torch.unique(ei[1])
        assert torch.allclose(sums[receivers], torch.ones(len(receivers), 2), atol=1e-5)
    # the trained rounds and the actions are exactly the network's own forward pass
    out = net(data, return_intentions=True)
    assert torch.allclose(tr.intentions[:4], torch.stack(out.intentions))
    assert torch.equal(tr.actions, out.dist.greedy()) and tr.actions[0] != 3  # masked action never chosen
    assert torch.allclose(tr.probs.sum(-1), torch.ones(6))
    # extra rounds apply the same shared operator to the last trained round
    h = net.encoder(data.x)
    mu4 = net.conv(tr.intentions[3], h, expected_edges)
    assert torch.allclose(tr.intentions[4], mu4, atol=1e-6)
    assert torch.equal(tr.pos, data.pos)


def test_trace_needs_an_ip_policy():
    class NotIP(torch.nn.Module):
        policy = torch.nn.Linear(2, 2)

    with pytest.raises(TypeError, match="algo.name: ipsac"):
        analysis.propagation_trace(NotIP(), small_graph())


def test_fixed_point_numbers_match_a_hand_computation():
    net = small_net(rounds=2)
    traces = [analysis.propagation_trace(net, small_graph(), extra_rounds=1) for _ in range(3)]
    mus = [t.intentions.numpy().astype(np.float64) for t in traces]
    hand = np.stack([[np.sqrt(((mu[m] - mu[m - 1]) ** 2).sum(-1)) for m in range(1, 4)] for mu in mus])  # [S, R, N]
    assert np.allclose(analysis.round_distances(traces[0]).numpy(), hand[0], atol=1e-5)
    rel = np.stack([[hand[s, m - 1] / np.sqrt((mus[s][m - 1] ** 2).sum(-1)) for m in range(1, 4)] for s in range(3)])
    assert np.allclose(analysis.round_distances(traces[1], relative=True).numpy(), rel[1], atol=1e-5)
    st = analysis.fixed_point_stats(traces)
    pooled = hand.transpose(1, 0, 2).reshape(3, -1)  # [R, S*N]
    assert st.rounds.tolist() == [1, 2, 3] and st.trained_rounds == 2
    assert np.allclose(st.mean.numpy(), pooled.mean(1), atol=1e-5)
    assert np.allclose(st.std.numpy(), pooled.std(1, ddof=1), atol=1e-5)
    assert np.allclose(st.max.numpy(), pooled.max(1), atol=1e-5)
    assert np.allclose(st.median.numpy(), np.quantile(pooled, 0.5, axis=1), atol=1e-5)
    assert np.allclose(st.state_means.numpy(), hand.mean(2), atol=1e-5)
    rows = st.rows()
    assert [r["trained"] for r in rows] == [True, True, False]
    assert math.isclose(rows[0]["std_states"], float(np.std(hand.mean(2)[:, 0], ddof=1)), rel_tol=1e-4)
    # a batch of the same states counts each graph as one state
    batch = Batch.from_data_list([small_graph(), small_graph()])
    tb = analysis.propagation_trace(net, batch)
    sb = analysis.fixed_point_stats(tb)
    d = analysis.round_distances(tb)
    assert sb.state_means.shape == (2, 2)
    assert torch.allclose(sb.state_means[1], d[:, 6:].mean(1), atol=1e-6)


def test_projection_is_a_shared_pca():
    torch.manual_seed(1)
    basis = torch.linalg.qr(torch.randn(8, 2)).Q  # a plane in R^8
    coords = torch.randn(4, 10, 2) * torch.tensor([3.0, 1.0])
    x = coords @ basis.T + 5.0  # [rounds, agents, 8]
    proj = analysis.fit_projection(x)
    assert torch.allclose(proj.mean, x.reshape(-1, 8).mean(0), atol=1e-5)
    assert torch.allclose(proj.components.T @ proj.components, torch.eye(2), atol=1e-5)
    assert abs(float(proj.explained.sum()) - 1.0) < 1e-5 and proj.explained[0] > proj.explained[1]
    y = proj(x)
    assert y.shape == (4, 10, 2)
    # the plane is recovered: projecting and mapping back reproduces the data
    assert torch.allclose(y @ proj.components.T + proj.mean, x, atol=1e-4)
    # same axes as torch's PCA, up to sign; variance along them is the top-2 variance
    _, _, v = torch.pca_lowrank(x.reshape(-1, 8), q=2, center=True)
    assert torch.allclose((proj.components.T @ v).abs(), torch.eye(2), atol=1e-3)
    assert analysis.fit_projection(x).components.equal(proj.components)  # deterministic signs
    # one projection for all rounds of a trace (fitted on every round together)
    tr = analysis.propagation_trace(small_net(), small_graph())
    p = analysis.fit_projection(tr)
    assert torch.allclose(p.mean, tr.intentions.reshape(-1, 8).mean(0), atol=1e-5)
    # degenerate input: identical points, no variance
    flat = analysis.fit_projection(torch.ones(5, 3))
    assert torch.equal(flat.explained, torch.zeros(2))


def test_select_graph():
    a, b = small_graph(), small_graph(n=4)
    batch = Batch.from_data_list([a, b])
    g = analysis.select_graph(batch, 1)
    assert torch.equal(g.x, b.x) and torch.equal(g.edge_index, b.edge_index) and torch.equal(g.pos, b.pos)
    assert analysis.select_graph(a) is a


# ------------------------------------------------------------------------------------------------
# figures


def _labelled(fig):
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison and ax.get_label() != "<colorbar>"]
    assert axes and any(ax.get_title() for ax in axes) and any(ax.get_xlabel() for ax in axes)


def test_plots_on_positions_and_on_a_road_map(tmp_path):
    net = small_net(rounds=2)
    trs = [analysis.propagation_trace(net, small_graph(), extra_rounds=2) for _ in range(2)]
    figs = [
        analysis.plot_intentions(trs[0], analysis.fit_projection(trs)),
        analysis.plot_round_distances(trs),
        analysis.plot_round_distances(trs, relative=True),
        analysis.plot_attention(trs[0]),
    ]  # particles: obs.pos
    sc = load_scenario(materialise(GRID, tmp_path))
    n = sc.num_agents
    data = Data(x=torch.randn(n, 5), edge_index=sc.edge_index(), pos=sc.positions())
    tr = analysis.propagation_trace(net, data)
    figs.append(analysis.plot_attention(tr, scenario=sc, rounds=[1, 2]))
    actions = [torch.randint(4, (n,)) for _ in range(5)]
    figs += [analysis.plot_phase_maps(sc, actions, action_interval=10), analysis.plot_phase_timeline(sc, actions, 10)]
    for k, fig in enumerate(figs):
        _labelled(fig)
        fig.savefig(tmp_path / f"{k}.png")
        assert (tmp_path / f"{k}.png").read_bytes()[:4] == b"\x89PNG"
    labels = analysis.phase_labels(sc)
    assert labels == [
        "0: EB straight, WB straight",
        "1: NB straight, SB straight",
        "2: EB left, WB left",
        "3: NB left, SB left",
    ]


# ------------------------------------------------------------------------------------------------
# checkpoints


def test_load_run_mpe_and_rollout(tmp_path):
    path = untrained_checkpoint(mpe_raw(), tmp_path / "run")
    run = load_run(tmp_path / "run")  # a run directory works
    cfg, env, algo = run
    assert run.path == path and cfg.device == "cpu" and not algo.training
    assert analysis.traffic_scenario(env) is None
    ro = analysis.rollout(env, algo, seed=3)
    assert len(ro.actions) == 5 and ro.episode["episode_length"] == 5
    tr = analysis.propagation_trace(algo, ro.observations[2])
    assert tr.pos.shape == (3, 2) and tr.attention[0][1].shape[1] == 2
    _labelled(analysis.plot_attention(tr))
    env.close()
    with pytest.raises(ValueError, match="do not fit this task.*--model.hidden=8"):
        load_run(path, ["--model.hidden=8"])
    short = load_run(path, ["--env.max_steps=2"])
    assert len(analysis.rollout(short.env, short.algo).actions) == 2
    short.env.close()


# ------------------------------------------------------------------------------------------------
# interpretation (app. C.3)


def test_movement_distributions_and_divergences(tmp_path):
    sc = load_scenario(materialise(GRID, tmp_path))
    table = movement_table(sc)
    full = movement_table(sc, include_always_green=True)
    assert table.num_movements == 4 * 8 and full.num_movements == 4 * 12  # right turns are always green
    assert len(table.lanes) == 4 * 12 - 4 * 4  # lanes feeding signalised movements (dedicated right lanes left out)
    counts = np.random.default_rng(0).integers(0, 5, size=(7, len(table.lanes))).astype(float)
    vol = movement_volume(table, counts)
    assert vol.shape == (7, 32) and np.allclose(vol.sum(1), counts.sum(1))  # every vehicle counted once
    actions = np.random.default_rng(1).integers(0, 4, size=(7, 4))
    green = action_movements(table, actions)
    assert np.array_equal(green.sum(1), np.full(7, 4 * 2))  # each phase greens 2 signalised movements
    # action 1 of intersection 0 ("NB straight, SB straight") greens exactly its two straight movements
    one = action_movements(table, np.array([1, 0, 0, 0]))
    names = [table.names[k] for k in np.flatnonzero(one * (table.agent == 0))]
    inter = sc.intersections[0]
    expect = {
        f"{inter.id}:{l.start_road}->{l.end_road}"
        for k, l in enumerate(inter.road_links)
        if k in set(inter.phases[inter.action_phases[1]]) and l.kind == "go_straight"
    }
    assert set(names) == expect and len(names) == 2
    p, q = normalise(vol), normalise(green)
    assert np.allclose(p.sum(1), 1) and np.allclose(q.sum(1), 1)
    assert np.isnan(normalise(np.zeros(3))).all()
    # KL is zero for equal distributions, positive otherwise; the distance likewise
    assert abs(kl_divergence(p[0], p[0])) < 1e-12 and euclidean_distance(p[0], p[0]) == 0
    r = np.array([0.5, 0.5, 0.0])
    s = np.array([0.25, 0.25, 0.5])
    assert kl_divergence(r, s) > 0 and kl_divergence(s, r) > kl_divergence(r, s)  # epsilon keeps it finite
    assert math.isfinite(kl_divergence(s, r))
    e = EPSILON
    rs, ss = (r + e) / (1 + 3 * e), (s + e) / (1 + 3 * e)
    assert math.isclose(kl_divergence(r, s), float((rs * np.log(rs / ss)).sum()), rel_tol=1e-12)
    assert math.isclose(euclidean_distance(r, s), math.sqrt(2 * 0.25**2 + 0.25), rel_tol=1e-12)
    # intervals: sums over each group of steps, a shorter last one, nan where no vehicle
    vol[5:] = 0
    rec = Recording(vol, green, np.repeat([0, 1], [4, 3]), np.r_[0:4, 0:3], [])
    rows = interval_rows(rec, 3)
    assert [r["steps"] for r in rows] == [3, 3, 1] and rows[1]["first_episode"] == 0 and rows[1]["last_episode"] == 1
    want = kl_divergence(normalise(vol[:3].sum(0)), normalise(green[:3].sum(0)))
    assert math.isclose(rows[0]["kl"], float(want)) and math.isnan(rows[2]["kl"])


def test_interpret_cli_on_a_sumo_grid(tmp_path, capsys):
    path = untrained_checkpoint(traffic_raw(), tmp_path / "run")
    assert main(["--checkpoint", str(path), "--episodes", "2", "--interval", "4"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = tmp_path / "run" / "interpretation"
    assert summary["csv"] == str(out / "interpretation.csv") and summary["decisions"] == 20
    assert summary["intervals"] == 5 and summary["movements"] == 32
    with open(out / "interpretation.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and [int(r["steps"]) for r in rows] == [4, 4, 4, 4, 4]
    kls = [float(r["kl"]) for r in rows]
    assert all(k > 0 for k in kls if math.isfinite(k))
    assert math.isclose(summary["mean_kl"], np.nanmean(kls))
    assert (out / "interpretation.png").read_bytes()[:4] == b"\x89PNG"


def test_interpret_runs_summarises_each_method_over_its_seeds(tmp_path, capsys):
    """``--runs``: every method's runs of an ipgnn-compare directory, each interpreted on its own seed, and one
    row per method whose means are those of its runs' own summaries; ``--greedy`` plays the greedy policy."""
    root = tmp_path / "cmp"
    for algo, seed in (("ipsac", 0), ("ipsac", 1), ("iql", 0)):
        untrained_checkpoint(
            traffic_raw() | {"seed": seed, "algo": {"name": algo}}, root / "grid" / algo / f"seed{seed}"
        )
    out = tmp_path / "interp"
    assert (
        main(["--runs", str(root), "--algos", "ipsac,iql", "--episodes", "1", "--interval", "5", "--out", str(out)])
        == 0
    )
    assert "wrote" in capsys.readouterr().out
    with open(out / "summary.csv") as f:
        rows = {r["algo"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"ipsac", "iql"} and rows["ipsac"]["seeds"] == "2" and rows["iql"]["seeds"] == "1"
    runs = [
        json.loads(
            json.dumps(
                interpret_mod.interpret(root / "grid" / "ipsac" / f"seed{s}", 1, 5, tmp_path / f"again{s}").summary
            )
        )
        for s in (0, 1)
    ]
    assert math.isclose(float(rows["ipsac"]["mean_distance/mean"]), np.mean([r["mean_distance"] for r in runs]))
    assert runs[0]["mean_distance"] != runs[1]["mean_distance"]  # the seeds play their own episodes
    assert "| grid | ipsac | 2 |" in (out / "summary.md").read_text()
    assert (out / "interpretation.png").read_bytes()[:4] == b"\x89PNG"
    greedy = interpret_mod.interpret(root / "grid" / "iql" / "seed0", 1, 5, tmp_path / "g", greedy=True)
    assert greedy.summary["actions"] == "greedy"
    assert main(["--runs", str(root), "--algos", "dgn", "--out", str(out)]) == 2
    assert "no checkpoints/latest.pt of dgn" in capsys.readouterr().err


def test_interpret_errors(tmp_path, capsys):
    cfg = validate(mpe_raw())
    path = checkpoint.save({"config": cfg.to_dict(), "algo": {}, "env_step": 0}, tmp_path / "mpe.pt")
    assert main(["--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "'mpe_spread'" in err
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["--checkpoint", str(path), "--interval", "0"]) == 2
    assert "--interval" in capsys.readouterr().err
    other = checkpoint.save({"weights": torch.zeros(2)}, tmp_path / "replay.pt")
    assert main(["--checkpoint", str(other)]) == 2
    assert str(other) in capsys.readouterr().err
