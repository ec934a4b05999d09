"""``ipgnn-data``: pinned downloads, verified before use, written atomically.

The network is not reachable from CI, so the downloads run through ``urllib`` against a ``file://``
mirror laid out like the pinned commit's ``data/`` directory, built from the real Hangzhou copy in
../shared/data/cityflow/ (skipped when absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipgnn.traffic import datasets
from ipgnn.traffic.datasets import DATASETS, DatasetError, fetch

REPO = Path(__file__).resolve().parents[1]
HANGZHOU = REPO.parent / "shared" / "data" / "cityflow" / "hangzhou_4x4"


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    if not (HANGZHOU / "roadnet.json").is_file():
        pytest.skip(f"{HANGZHOU} not present (the shared data sets are optional)")
    ds = DATASETS["hangzhou_4x4"]
    root = tmp_path / "mirror"
    for local, remote in ds.files().items():
        dst = root / remote.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HANGZHOU / local, dst)
    return root


def test_fetch_verifies_pins_and_loads(mirror: Path, tmp_path: Path):
    from ipgnn.traffic.scenario import load_scenario

    lines: list[str] = []
    out = fetch("hangzhou_4x4", tmp_path / "data", base_url=mirror.as_uri(), echo=lines.append)
    assert (out / "roadnet.json").read_bytes() == (HANGZHOU / "roadnet.json").read_bytes()
    assert sum("SHA-256 verified" in line for line in lines) == 2
    assert not list(out.glob(".*part"))  # no temporary files left behind
    assert len(load_scenario(out).intersections) == DATASETS["hangzhou_4x4"].num_agents
    # a second fetch keeps the verified files and downloads nothing
    lines.clear()
    fetch("hangzhou_4x4", tmp_path / "data", base_url=(tmp_path / "nowhere").as_uri(), echo=lines.append)
    assert sum("present and verified" in line for line in lines) == 2


def test_tampered_file_is_rejected_and_not_kept(mirror: Path, tmp_path: Path):
    flow = mirror / DATASETS["hangzhou_4x4"].flow.path
    raw = bytearray(flow.read_bytes())
    i = raw.index(b"3588")
    raw[i : i + 4] = b"3589"  # same size, other content
    flow.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="SHA-256 .* expected 595a6140"):
        fetch("hangzhou_4x4", tmp_path / "data", base_url=mirror.as_uri(), echo=lambda s: None)
    left = sorted(p.name for p in (tmp_path / "data" / "hangzhou_4x4").iterdir())
    assert left == ["roadnet.json"]  # the verified roadnet stays; the bad flow was never written


def test_size_mismatch_and_missing_file(mirror: Path, tmp_path: Path):
    flow = mirror / DATASETS["hangzhou_4x4"].flow.path
    flow.write_bytes(flow.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="bytes, expected 899200"):
        fetch("hangzhou_4x4", tmp_path / "a", base_url=mirror.as_uri(), echo=lambda s: None)
    flow.unlink()
    with pytest.raises(DatasetError, match="could not download .*anon_4_4_hangzhou_real.json"):
        fetch("hangzhou_4x4", tmp_path / "b", base_url=mirror.as_uri(), echo=lambda s: None)


def test_unpinned_digest_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A file pinned by size only is accepted when its size matches, and its digest is printed."""
    body = b'{"intersections": [], "roads": []}'
    src = tmp_path / "m" / "x" / "r.json"
    src.parent.mkdir(parents=True)
    src.write_bytes(body)
    (src.parent / "f.json").write_bytes(b"[]")
    ds = datasets.Dataset(
        "toy", "toy", 0, datasets.RemoteFile("x/r.json", len(body)), datasets.RemoteFile("x/f.json", 2)
    )
    monkeypatch.setitem(DATASETS, "toy", ds)
    lines: list[str] = []
    fetch("toy", tmp_path / "d", base_url=(tmp_path / "m").as_uri(), echo=lines.append)
    assert any("not pinned" in line and datasets._sha256(src) in line for line in lines)


def test_cli_list_and_errors(mirror: Path, tmp_path: Path):
    env = dict(os.environ)
    run = lambda *a: subprocess.run(
        [sys.executable, "-c", "import sys; from ipgnn.traffic.datasets import main; sys.exit(main(sys.argv[1:]))", *a],
        capture_output=True,
        text=True,
        env=env,
    )
    res = run("list")
    assert res.returncode == 0 and "hangzhou_4x4" in res.stdout and "jinan_3x4" in res.stdout
    res = run("fetch", "atlantis")
    assert res.returncode == 2 and "unknown data set" in res.stderr and "hangzhou_4x4" in res.stderr
    res = run("fetch", "hangzhou_4x4", "--dest", str(tmp_path / "d"), "--base-url", mirror.as_uri())
    assert res.returncode == 0, res.stderr
    assert f"--env.options.scenario={tmp_path / 'd' / 'hangzhou_4x4'}" in res.stdout
    res = run("fetch", "hangzhou_4x4", "--dest", str(tmp_path / "e"), "--base-url", (tmp_path / "none").as_uri())
    assert res.returncode == 1 and "could not download" in res.stderr and "Traceback" not in res.stderr


def test_every_shipped_file_is_pinned_to_a_sha256():
    """Issue 14: New York's and Jinan's files carry the digests measured at the pinned commit."""
    for ds in DATASETS.values():
        for name, f in ds.files().items():
            assert f.sha256 is not None and len(f.sha256) == 64, (ds.name, name)
    assert DATASETS["newyork_16x3"].roadnet.sha256.startswith("918fe133")
    assert DATASETS["jinan_3x4"].flow.sha256.startswith("23373963")


@pytest.mark.parametrize("name", ["hangzhou_4x4", "hangzhou_4x4_5816", "jinan_3x4"])
def test_the_shared_copies_match_the_pins(name):
    """Issue 30: the field's five data sets (JN1-3 are jinan_3x4's three flows; HZ1, HZ2 the two Hangzhou
    flows) are pinned, and the copies in ../shared are those files, byte for byte."""
    from ipgnn.traffic.datasets import verify

    local = REPO.parent / "shared" / "data" / "cityflow" / name
    if not local.is_dir():
        pytest.skip(f"{local} not present (the shared data sets are optional)")
    files = DATASETS[name].files()
    assert sorted(files) == sorted(p.name for p in local.glob("*.json"))
    for file, remote in files.items():
        assert verify(local / file, remote) == remote.sha256


def test_env_options_flow_picks_one_of_a_data_sets_flows(tmp_path):
    """``env.options.flow`` selects JN2/JN3 in the jinan_3x4 directory; a missing file is one clear error."""
    from ipgnn.config import ConfigError, EnvConfig, GraphConfig
    from ipgnn.envs import make_env

    local = REPO.parent / "shared" / "data" / "cityflow" / "jinan_3x4"
    if not local.is_dir():
        pytest.skip(f"{local} not present (the shared data sets are optional)")

    def env_for(flow):
        options = {"scenario": str(local), "engine": "cityflow", "flow": flow}
        return make_env(
            EnvConfig(task="traffic", num_agents=12, max_steps=2, graph=GraphConfig(kind="env"), options=options)
        )

    pytest.importorskip("cityflow")
    sizes = {}
    for flow in ("flow.json", "flow_2000.json", "flow_2500.json"):
        env = env_for(flow)
        assert env.env.scenario.flow_path.name == flow
        sizes[flow] = len(env.env.scenario.flows)
        env.close()
    assert len(set(sizes.values())) == 3, sizes  # three different demands
    with pytest.raises(ConfigError, match="flow_9999.json"):
        env_for("flow_9999.json")
