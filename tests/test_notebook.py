"""notebooks/explore_embeddings.ipynb runs top to bottom against a small traffic checkpoint trained here
(a 2x2 SUMO grid), and draws every figure; the committed file carries no outputs."""

import pytest

from conftest import REPO
from test_analysis import traffic_raw

pytest.importorskip("libsumo")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = REPO / "notebooks" / "explore_embeddings.ipynb"
FIGURES = ("figure-a", "figure-b", "figure-b-relative", "figure-c", "figure-d")


def _execute(nb, cwd):
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    return client.execute()


def test_committed_notebook_is_stripped():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert {t for c in code for t in c.metadata.get("tags", [])} >= set(FIGURES)


def test_notebook_runs_on_a_trained_traffic_checkpoint(tmp_path, tmp_path_factory, monkeypatch):
    from ipgnn.config import validate
    from ipgnn.trainer import Trainer

    monkeypatch.setenv("IPGNN_CACHE", str(tmp_path_factory.getbasetemp() / "ipgnn-cache"))
    trainer = Trainer.from_config(validate(traffic_raw()), tmp_path / "run")
    try:
        trainer.train()  # 60 decisions, 4 gradient phases: a policy that has seen gradient steps
    finally:
        trainer.close()
    ckpt = tmp_path / "run" / "checkpoints" / "latest.pt"
    assert ckpt.is_file()
    monkeypatch.setenv("IPGNN_CHECKPOINT", str(ckpt))
    monkeypatch.setenv("IPGNN_EXTRA_ROUNDS", "2")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = _execute(nbformat.read(NOTEBOOK, as_version=4), tmp_path)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if tags & set(FIGURES):
            images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert images, f"cell {sorted(tags)} drew no figure"
            if "figure-d" in tags:
                assert len(images) == 2  # phase maps and timeline
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert "task traffic, N = 4" in text and "round 4" in text  # M = 2 trained + 2 extra rounds


def test_notebook_says_how_to_point_it_at_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("IPGNN_CHECKPOINT", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(k for k, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells = nb.cells[: first + 1]
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="IPGNN_CHECKPOINT"):
        _execute(nb, tmp_path)
