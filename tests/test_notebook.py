"""notebooks/explore_embeddings.ipynb: committed with the outputs of the shipped trained checkpoint
(results/notebook/, IP-SAC on Hangzhou-16), and run top to bottom here against a small traffic checkpoint
trained in the test (a 2x2 SUMO grid), drawing every figure; cell (e)'s queues are checked against the
environment's own queue reward."""

import copy
import json
import re

import numpy as np
import pytest
from test_analysis import traffic_raw

from conftest import REPO

pytest.importorskip("libsumo")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = REPO / "notebooks" / "explore_embeddings.ipynb"
SHIPPED = "results/notebook/hangzhou16_ipsac_seed0.pt"
FIGURES = ("figure-a", "figure-b", "figure-b-relative", "figure-c", "figure-d", "figure-e")
ATT = re.compile(r"'average_travel_time': ([0-9.]+)")

# appended to the notebook in the test: what cell (e) computed, for the test to check
CHECK_CELL = """import json
print("CHECK " + json.dumps({
    "queues_shape": list(queues.shape), "queue_shape": list(queue.shape), "names": names, "agent": agent,
    "mean_queue": mean_queue.tolist(), "phases": phases.tolist(), "n_phases": n_phases,
    "decisions": len(ro.actions), "num_agents": env.num_agents,
    "in_roads": len({r for r, _ in scenario.intersections[agent].incoming_lanes}),
    "total_queue": queues.sum(-1).tolist(), "rewards": torch.stack(ro.rewards).tolist()}))
"""


def _execute(nb, cwd):
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(cwd)}}
    )
    return client.execute()


def _text(nb) -> str:
    return "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.get("output_type") == "stream"
    )


def _check_figures(nb):
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors[0]
    seen = set()
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", [])) & set(FIGURES)
        if tags:
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"cell {sorted(tags)} drew no figure"
            if "figure-d" in tags:
                assert len(images) == 2  # phase maps and timeline
            seen |= tags
    assert seen == set(FIGURES)


def test_shipped_checkpoint_is_a_small_trained_hangzhou_policy():
    from ipgnn import checkpoint

    path = REPO / SHIPPED
    assert path.is_file() and path.stat().st_size < 5 * 2**20
    state = checkpoint.load(path)
    cfg = state["config"]
    assert (cfg["algo"]["name"], cfg["env"]["task"], cfg["env"]["num_agents"]) == ("ipsac", "traffic", 16)
    assert state["env_step"] == cfg["train"]["total_steps"] == 10000
    assert path.name in (REPO / "results" / "notebook" / "README.md").read_text()


def test_committed_notebook_shows_the_shipped_policy():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # one run, top to bottom
    _check_figures(nb)
    text = _text(nb)
    assert f"checkpoint {SHIPPED}: task traffic, N = 16, trained for 10000 steps" in text
    assert "the largest mean queue" in text and "phase changes:" in text


def test_committed_outputs_are_the_shipped_checkpoints():
    """The episode in the committed outputs is the one the shipped checkpoint plays (CityFlow + the data set)."""
    from ipgnn import analysis
    from ipgnn.config import ConfigError
    from ipgnn.runs import load_run
    from ipgnn.seeding import eval_seed

    committed = ATT.search(_text(nbformat.read(NOTEBOOK, as_version=4)))
    assert committed
    try:
        cfg, env, algo = load_run(REPO / SHIPPED)
    except ConfigError as exc:  # no Hangzhou data set (ipgnn-data fetch hangzhou_4x4) or no CityFlow
        pytest.skip(f"the shipped checkpoint's scenario cannot be played here: {exc}")
    try:
        ro = analysis.rollout(env, algo, seed=eval_seed(cfg.seed, 0), deterministic=True)
    finally:
        env.close()
    assert ro.episode["average_travel_time"] == pytest.approx(float(committed.group(1)), abs=1e-6)


@pytest.mark.slow
def test_notebook_runs_on_a_trained_traffic_checkpoint(tmp_path, tmp_path_factory, monkeypatch):
    from ipgnn.config import validate
    from ipgnn.trainer import Trainer

    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path_factory.getbasetemp() / "ipgnn-cache"))
    raw = traffic_raw()
    # the queue reward (minus the halted vehicles on an intersection's incoming lanes after each decision) is the
    # environment's own count of what cell (e) reads from the observations: the test compares the two
    raw["env"]["options"]["reward"] = "queue"
    raw["env"]["max_steps"] = 20  # long enough for queues to form on the 2x2 grid
    trainer = Trainer.from_config(validate(raw), tmp_path / "run")
    try:
        trainer.train()  # 60 decisions, 4 gradient phases: a policy that has seen gradient steps
    finally:
        trainer.close()
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert ckpt.is_file()
    monkeypatch.setenv("IPGNN_CHECKPOINT", str(ckpt))
    monkeypatch.setenv("IPGNN_EXTRA_ROUNDS", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK_CELL))
    nb = _execute(nb, tmp_path)
    _check_figures(nb)
    text = _text(nb)
    assert "task traffic, N = 4" in text and "round 4" in text  # M = 2 trained + 2 extra rounds

    got = json.loads(text.split("CHECK ", 1)[1])
    t, n = got["decisions"], got["num_agents"]
    assert t == 20 and n == 4
    # one row per decision, one column per approach (incoming road) of the intersection shown
    assert got["queue_shape"] == [t, got["in_roads"]] == [t, len(got["names"])]
    assert got["queues_shape"][:2] == [t, n] and got["queues_shape"][2] >= got["in_roads"]
    assert got["agent"] == int(np.argmax(got["mean_queue"]))  # the busiest intersection
    phases = np.array(got["phases"])
    assert phases.shape == (t,) and ((phases >= 0) & (phases < got["n_phases"])).all()
    # the queues of the state after decision k are minus the queue reward of decision k, at every intersection
    total, rewards = np.array(got["total_queue"]), np.array(got["rewards"])
    assert total.shape == rewards.shape == (t, n)
    assert total.sum() > 0  # vehicles did halt: the comparison below is not between zeros
    np.testing.assert_allclose(total[1:], -rewards[:-1])


@pytest.mark.slow
def test_notebook_falls_back_to_the_shipped_checkpoint_and_says_how_to_point_it(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells = nb.cells[: first + 1] + [nbformat.v4.new_code_cell("print('CHECKPOINT', CHECKPOINT)")]
    monkeypatch.delenv("IPGNN_CHECKPOINT", raising=False)
    ran = _execute(copy.deepcopy(nb), REPO / "notebooks")  # as Jupyter opens it: from notebooks/
    assert f"CHECKPOINT {SHIPPED}" in _text(ran)
    monkeypatch.setenv("IPGNN_CHECKPOINT", str(tmp_path / "missing.pt"))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="IPGNN_CHECKPOINT"):
        _execute(nb, tmp_path)
