"""Decentralised execution (issue 17): the agent-local step against the central network, the links and
mailboxes, the multi-process transport, the CLI on a real SUMO scenario, and the exported TorchScript step
in a fresh interpreter without PyG."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from ipgnn.config import load_config
from ipgnn.decentralised import DecentralisedPolicy, Links, Mailbox, link_uniform
from ipgnn.graphs import expand_hops, knn_edges
from ipgnn.nn.local import AgentStep, export_agent_step, neighbour_table
from ipgnn.nn.propagation import IntentionPropagationNetwork

from conftest import CONFIGS, REPO

GRID = '--env.options.scenario={"kind": "grid", "rows": 3, "cols": 3, "rate": 600}'
TRAFFIC = [GRID, "--env.num_agents=9", "--env.max_steps=6", "--env.options.engine=sumo"]


def traffic_env():
    pytest.importorskip("libsumo")
    from ipgnn.envs import make_env

    return make_env(load_config([CONFIGS / "manhattan96.yaml"], TRAFFIC).env)


def per_agent(step: AgentStep, obs: Data, neighbour_lists: list[list[int]]) -> torch.Tensor:
    """Every agent alone (B = 1), exchanging its intentions by hand: agent i sees only its own row and
    the messages of its neighbours. A plain loop, as separate controllers would run."""
    n = obs.x.size(0)
    types = getattr(obs, "agent_type", None)
    mask = getattr(obs, "action_mask", None)
    c = [step.encode(obs.x[i : i + 1], None if types is None else types[i : i + 1]) for i in range(n)]
    mus = [[step.initial(c[i])] for i in range(n)]
    for m in range(1, step.rounds + 1):
        outbox = [mus[j][m - 1] for j in range(n)]  # what each agent sent in round m
        for i in range(n):
            nb = neighbour_lists[i]
            received = torch.cat([outbox[j] for j in nb]).unsqueeze(0) if nb else torch.zeros(1, 0, step.channels)
            heard = torch.ones(1, len(nb), dtype=torch.bool)
            mus[i].append(step.update(mus[i][m - 1], c[i], received, heard))
    return torch.cat([step.readout(torch.cat(mus[i], -1), None if mask is None else mask[i : i + 1]) for i in range(n)])


def lists(edge_index: torch.Tensor, n: int) -> list[list[int]]:
    out = [[] for _ in range(n)]
    for j, i in edge_index.t().tolist():
        out[i].append(j)
    return out


@pytest.mark.parametrize("heads,types,hops", [(1, 1, 1), (4, 3, 1), (2, 1, 2)])
def test_agents_stepping_alone_reproduce_the_central_network_on_a_knn_graph(heads, types, hops):
    torch.manual_seed(0)
    n = 12
    net = IntentionPropagationNetwork(7, 5, True, hidden=32, rounds=3, hops=hops, heads=heads, num_agent_types=types)
    obs = Data(
        x=torch.randn(n, 7),
        edge_index=knn_edges(torch.rand(n, 2), 3),
        action_mask=torch.rand(n, 5) > 0.3,
        agent_type=torch.randint(0, types, (n,)),
    )
    obs.action_mask[:, 0] = True
    central = net(obs).dist.logits
    step = AgentStep.from_network(net)
    local = per_agent(step, obs, lists(expand_hops(obs.edge_index, n, hops), n))
    assert torch.allclose(local, central, atol=1e-5, rtol=1e-5)
    assert torch.equal(local.argmax(-1), central.argmax(-1))
    # the whole network at once through the dense neighbour table is the same computation
    nb, valid = neighbour_table(expand_hops(obs.edge_index, n, hops), n)
    assert torch.allclose(step(obs.x, nb, valid, obs.agent_type, obs.action_mask), central, atol=1e-5, rtol=1e-5)
    # a wrong weight shows: the test can fail
    with torch.no_grad():
        step.lin_msg.weight.mul_(1.01)
    assert not torch.allclose(
        per_agent(step, obs, lists(expand_hops(obs.edge_index, n, hops), n)), central, atol=1e-5, rtol=1e-5
    )


def test_agents_stepping_alone_reproduce_the_central_network_on_a_road_graph():
    env = traffic_env()
    try:
        obs = env.reset(seed=3)
        torch.manual_seed(1)
        net = IntentionPropagationNetwork(env.spec.obs_dim, env.spec.action_dim, True, hidden=32, rounds=2)
        central = net(obs).dist.logits
        local = per_agent(AgentStep.from_network(net), obs, lists(obs.edge_index, env.num_agents))
        assert obs.edge_index.size(1) > env.num_agents  # a real road graph: every agent has neighbours
        assert torch.allclose(local, central, atol=1e-5, rtol=1e-5)
        assert torch.equal(local.argmax(-1), central.argmax(-1))
    finally:
        env.close()


def test_link_losses_are_a_deterministic_uniform_hash():
    src, dst = np.repeat(np.arange(100), 100), np.tile(np.arange(100), 100)
    u = link_uniform(7, 3, src, dst)
    assert np.array_equal(u, link_uniform(7, 3, src, dst))
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 900  # 10 000 draws, about 1 000 per decile
    assert not np.array_equal(u, link_uniform(8, 3, src, dst))  # another episode
    assert not np.array_equal(u, link_uniform(7, 4, src, dst))  # another round
    assert abs(np.corrcoef(u, link_uniform(7, 3, dst, src))[0, 1]) < 0.05  # the reverse link is independent


def test_mailbox_fallbacks_and_delay():
    own = torch.full((1, 2), -1.0)
    nb, valid = torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.bool)
    receivers = torch.tensor([0])
    for fallback, expect_heard, expect in (
        ("last", [True, False], [5.0, 0.0]),
        ("own", [True, True], [-1.0, -1.0]),
        ("skip", [False, False], [5.0, 0.0]),
    ):
        box = Mailbox(Links(fallback=fallback), 3, 2)
        box.post(0, torch.tensor([1]), torch.tensor([0]), torch.full((1, 2), 5.0))
        received, heard = box.view(0, receivers, nb, valid, own)
        assert heard.tolist() == ([[True, True]] if fallback == "own" else [[True, False]])
        assert received[0, :, 0].tolist() == [5.0, -1.0 if fallback == "own" else 0.0]
        received, heard = box.view(1, receivers, nb, valid, own)  # round 1: nothing new arrives
        assert heard.tolist() == [expect_heard], fallback  # last: the stale value; own: mu^0; skip: nothing
        if fallback != "skip":
            assert received[0, :, 0].tolist() == expect, fallback
    box = Mailbox(Links(delay=2), 3, 2)
    box.post(0, torch.tensor([1]), torch.tensor([0]), torch.full((1, 2), 5.0))
    assert box.view(1, receivers, nb, valid, own)[1].tolist() == [[False, False]]  # still in flight
    assert box.view(2, receivers, nb, valid, own)[1].tolist() == [[True, False]]  # arrives 2 rounds later
    with pytest.raises(ValueError, match="drop"):
        Links(drop=1.5)
    with pytest.raises(ValueError, match="fallback"):
        Links(fallback="guess")


def test_lost_and_delayed_messages_change_the_decision_as_defined():
    """All messages lost: every agent decides alone (the central network on a graph without edges). A delay
    of one round with M = 1: decision t attends to the neighbours' mu^0 of decision t - 1."""
    torch.manual_seed(2)
    n = 8
    net = IntentionPropagationNetwork(4, 3, True, hidden=16, rounds=1)
    step = AgentStep.from_network(net)
    ei = knn_edges(torch.rand(n, 2), 3)
    x1, x2 = torch.randn(n, 4), torch.randn(n, 4)
    alone = net(Data(x=x2, edge_index=torch.zeros(2, 0, dtype=torch.long))).dist.logits.argmax(-1)
    for fb in ("last", "skip"):
        pol = DecentralisedPolicy(step, n, Links(drop=1.0, fallback=fb))
        pol.begin_episode(0)
        assert torch.equal(pol(Data(x=x2, edge_index=ei)), alone)
        assert pol.stats["messages_lost"] == pol.stats["messages_sent"] == ei.size(1)
    pol = DecentralisedPolicy(step, n, Links(delay=1))
    pol.begin_episode(0)
    first = pol(Data(x=x1, edge_index=ei))
    assert torch.equal(first, net(Data(x=x1, edge_index=ei[:, :0])).dist.logits.argmax(-1))  # nothing arrived yet
    second = pol(Data(x=x2, edge_index=ei))
    nb, valid = neighbour_table(ei, n)
    c2 = step.encode(x2)
    mu_prev = step.initial(step.encode(x1))
    expect = step.act(torch.cat([step.initial(c2), step.update(step.initial(c2), c2, mu_prev[nb], valid)], -1))
    assert torch.equal(second, expect)
    perfect = net(Data(x=x2, edge_index=ei)).dist.logits.argmax(-1)
    assert not torch.equal(expect, perfect) or not torch.equal(first, perfect)  # the delay is visible


@pytest.mark.slow
def test_worker_processes_take_the_in_process_networks_actions_on_a_real_simulator():
    """Three worker processes exchanging intentions through queues decide exactly as the in-process
    network under the same lossy links, and as the central network on perfect links."""
    env = traffic_env()
    torch.manual_seed(4)
    net = IntentionPropagationNetwork(env.spec.obs_dim, env.spec.action_dim, True, hidden=32, rounds=2)
    step = AgentStep.from_network(net)
    links = Links(drop=0.3, delay=1, fallback="last")
    pols = {
        "proc": DecentralisedPolicy(step, env.num_agents, links, processes=3),
        "local": DecentralisedPolicy(step, env.num_agents, links, processes=0),
        "perfect": DecentralisedPolicy(step, env.num_agents, Links(), processes=3),
    }
    try:
        for p in pols.values():
            p.begin_episode(11)
        obs = env.reset(seed=5)
        differs = False
        for _ in range(6):
            central = net(obs).dist.greedy()
            acts = {k: p(obs) for k, p in pols.items()}
            assert torch.equal(acts["proc"], acts["local"])
            assert torch.equal(acts["perfect"], central)
            differs |= not torch.equal(acts["proc"], central)
            obs = env.step(central).obs
        assert pols["proc"].stats == pols["local"].stats
        assert 0 < pols["proc"].stats["messages_lost"] < pols["proc"].stats["messages_sent"]
        assert differs  # the lossy links changed at least one decision
    finally:
        for p in pols.values():
            p.close()
        env.close()


def run_cli(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "ipgnn.cli_entry", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def last_json(stdout):
    return json.loads(stdout[stdout.index("{") :])


@pytest.fixture(scope="module")
def traffic_checkpoint(tmp_path_factory):
    pytest.importorskip("libsumo")
    run_dir = tmp_path_factory.mktemp("dec") / "run"
    run_cli(
        "train",
        "--config",
        str(CONFIGS / "manhattan96.yaml"),
        *TRAFFIC,
        "--model.hidden=16",
        "--replay.batch_size=8",
        "--train.total_steps=30",
        "--train.learning_starts=12",
        "--train.update_every=6",
        "--train.gradient_steps=2",
        "--train.eval_every=0",
        "--train.checkpoint_every=0",
        "--logger.mode=disabled",
        "--logger.progress=false",
        f"--run-dir={run_dir}",
    )
    return run_dir / "checkpoints" / "latest.pt"


@pytest.mark.slow
def test_eval_decentralised_drives_a_real_scenario_to_the_end_with_the_central_metrics(traffic_checkpoint):
    ckpt = str(traffic_checkpoint)
    central = last_json(run_cli("eval", "--checkpoint", ckpt, "--episodes", "1").stdout)
    dec = last_json(
        run_cli("eval", "--checkpoint", ckpt, "--episodes", "1", "--decentralised", "--processes", "9").stdout
    )  # one process per intersection
    assert dec["decentralised"]["processes"] == 9 and dec["decentralised"]["messages_lost"] == 0
    assert dec["decentralised"]["bytes_per_message"] == 4 * 16 + 12
    metrics = [k for k in central if k.startswith("eval/")]
    assert metrics and {k: dec[k] for k in metrics} == {k: central[k] for k in metrics}
    lossy = last_json(
        run_cli(
            "eval",
            "--checkpoint",
            ckpt,
            "--episodes",
            "1",
            "--decentralised",
            "--processes",
            "2",
            "--drop",
            "0.5",
            "--delay",
            "1",
            "--fallback",
            "own",
        ).stdout
    )
    assert lossy["decentralised"]["messages_lost"] > 0 and lossy["eval/episode_length"] == 6
    for args, msg in (
        (("--drop", "0.3"), "only apply with --decentralised"),
        (("--decentralised", "--drop", "1.5"), "drop: a probability in [0, 1]"),
        (("--decentralised", "--stochastic"), "greedily"),
        (("--decentralised", "--processes", "10"), "one per agent"),
    ):
        bad = run_cli("eval", "--checkpoint", ckpt, "--episodes", "1", *args, check=False)
        assert bad.returncode == 2 and msg in bad.stderr and "Traceback" not in bad.stderr, bad.stderr[-800:]


FRESH = textwrap.dedent("""
    import importlib.abc, json, sys
    class Refuse(importlib.abc.MetaPathFinder):  # this interpreter has neither PyG nor ipgnn
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch_geometric", "ipgnn"):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, Refuse())
    import torch
    step = torch.jit.load(sys.argv[1])
    case = torch.load(sys.argv[2])
    x, mask, lists = case["x"], case["mask"], case["lists"]
    n = x.size(0)
    c = [step.encode(x[i:i + 1], None) for i in range(n)]
    mus = [[step.initial(c[i])] for i in range(n)]
    for m in range(1, step.rounds + 1):
        for i in range(n):
            nb = lists[i]
            received = torch.stack([mus[j][m - 1][0] for j in nb]).unsqueeze(0)
            heard = torch.ones(1, len(nb), dtype=torch.bool)
            mus[i].append(step.update(mus[i][m - 1], c[i], received, heard))
    acts = [int(step.act(torch.cat(mus[i], -1), mask[i:i + 1])) for i in range(n)]
    print(json.dumps({"actions": acts, "pyg": "torch_geometric" in sys.modules, "ipgnn": "ipgnn" in sys.modules}))
""")


@pytest.mark.slow
def test_the_exported_step_runs_without_pyg_in_a_fresh_interpreter_and_matches(traffic_checkpoint, tmp_path):
    out = tmp_path / "agent_step.pt"
    proc = run_cli("export", "--checkpoint", str(traffic_checkpoint), "--out", str(out))
    assert out.is_file() and "wrote" in proc.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["rounds"] == 2 and meta["hidden"] == 16 and meta["bytes_per_message"] == 64
    # the package's actions: the checkpoint's policy, centrally, on real observations of three steps
    from ipgnn.runs import load_run

    with load_run(traffic_checkpoint) as run:
        policy = run.algo.policy
    env = traffic_env()
    try:
        obs = env.reset(seed=9)
        for _ in range(3):
            want = policy(obs).dist.greedy()
            torch.save(
                {"x": obs.x, "mask": obs.action_mask, "lists": lists(obs.edge_index, env.num_agents)},
                tmp_path / "case.pt",
            )
            script = tmp_path / "fresh.py"
            script.write_text(FRESH)
            res = subprocess.run(
                [sys.executable, "-I", str(script), str(out), str(tmp_path / "case.pt")],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert res.returncode == 0, res.stderr[-2000:]
            got = json.loads(res.stdout)
            assert got["pyg"] is False and got["ipgnn"] is False
            assert got["actions"] == want.tolist()
            obs = env.step(want).obs
    finally:
        env.close()
    bad = run_cli("export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt"), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_an_export_file_is_written_atomically(tmp_path):
    net = IntentionPropagationNetwork(3, 2, True, hidden=8, rounds=1)
    path = export_agent_step(AgentStep.from_network(net), tmp_path / "a" / "step.pt")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    loaded = torch.jit.load(str(path))
    x, ei = torch.randn(4, 3), knn_edges(torch.rand(4, 2), 2)
    nb, valid = neighbour_table(ei, 4)
    assert torch.allclose(loaded(x, nb, valid), net(Data(x=x, edge_index=ei)).dist.logits, atol=1e-6)


@pytest.mark.slow
def test_robustness_sweep_writes_its_table_and_figure(traffic_checkpoint, tmp_path):
    out = tmp_path / "rob"
    run_cli(
        "robustness",
        "--checkpoints",
        str(traffic_checkpoint),
        "--drop",
        "0",
        "1",
        "--delay",
        "1",
        "--fallback",
        "last",
        "own",
        "--out",
        str(out),
    )
    import csv

    rows = list(csv.DictReader(open(out / "runs.csv")))
    # perfect links once, then drop 1 and delay 1 per fallback
    assert [(r["drop"], r["delay"], r["fallback"]) for r in rows] == [
        ("0.0", "0", "last"),
        ("1.0", "0", "last"),
        ("0.0", "1", "last"),
        ("1.0", "0", "own"),
        ("0.0", "1", "own"),
    ]
    assert float(rows[1]["lost"]) == 1.0 and float(rows[0]["lost"]) == 0.0
    md = (out / "summary.md").read_text()
    assert "FixedTime" in md and "MaxPressure" in md and "(sumo)" in md
    from PIL import Image

    with Image.open(next(out.glob("robustness_*.png"))) as img:
        assert img.format == "PNG"
    fig = next(out.glob("robustness_*.png"))
    fig.unlink()
    assert run_cli("robustness", "--replot", "--out", str(out)).returncode == 0 and fig.is_file()
    bad = run_cli("robustness", "--replot", "--out", str(tmp_path / "empty"), check=False)
    assert bad.returncode == 2 and "summary" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli(
        "robustness",
        "--checkpoints",
        str(traffic_checkpoint),
        str(traffic_checkpoint),
        "--out",
        str(tmp_path / "bad"),
        check=False,
    )
    assert bad.returncode == 2 and "same seed" in bad.stderr and "Traceback" not in bad.stderr
