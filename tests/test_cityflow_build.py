"""``ipgnn-data build-cityflow``: the changes it makes to upstream's build description, and its errors.
The build itself runs in ``.ci/run`` (from ../shared/vendor) before the suite, and every CityFlow test
then runs on the engine it installed."""

import shutil
from pathlib import Path

import pytest

from ipgnn.traffic import cityflow_build as cb
from ipgnn.traffic.datasets import main as data_main

VENDOR = Path(__file__).resolve().parents[2] / "shared" / "vendor"


# the upstream lines the accessors (change 5) are inserted after, as upstream has them
UPSTREAM_BINDING = """#include "pybind11/pybind11.h"
#include "pybind11/stl.h"
        .def("get_lane_vehicle_count", &CityFlow::Engine::getLaneVehicleCount)
        .def("get_lane_waiting_vehicle_count", &CityFlow::Engine::getLaneWaitingVehicleCount)
        .def("get_lane_vehicles", &CityFlow::Engine::getLaneVehicles)
"""
UPSTREAM_HEADER = """        std::map<std::string, int> getLaneVehicleCount() const;

        std::map<std::string, int> getLaneWaitingVehicleCount() const;

        std::map<std::string, std::vector<std::string>> getLaneVehicles();
"""


def fake_tree(root: Path, cmake: str) -> Path:
    (root / "src" / "engine").mkdir(parents=True)
    (root / "src" / "cityflow.cpp").write_text(UPSTREAM_BINDING)
    (root / "src" / "engine" / "engine.h").write_text(UPSTREAM_HEADER)
    (root / "src" / "engine" / "engine.cpp").write_text("// engine\n")
    (root / "CMakeLists.txt").write_text(cmake)
    inc = root / "extern" / "rapidjson" / "include" / "rapidjson"
    inc.mkdir(parents=True)
    (inc / "document.h").write_text("// rapidjson")
    return root


UPSTREAM_SHAPE = """cmake_minimum_required(VERSION 3.0)
project(cityflow)
set(REQUIRED_SUBMODULES
    "extern/pybind11/CMakeLists.txt"
    "extern/rapidjson/include"
)
add_subdirectory(extern/pybind11)
include_directories(extern/rapidjson/include)

add_subdirectory(src)
pybind11_add_module(${PROJECT_NAME} MODULE src/cityflow.cpp)
"""


def test_patch_changes_only_the_pybind11_rapidjson_and_cmake_version_lines(tmp_path):
    text = (VENDOR / "cityflow" / "CMakeLists.txt").read_text() if VENDOR.is_dir() else UPSTREAM_SHAPE
    inc = tmp_path / "rj" / "include"
    out = cb.patch_cmakelists(text, inc)
    assert "cmake_minimum_required(VERSION 3.5)" in out and "VERSION 3.0)" not in out
    assert "add_subdirectory(extern/pybind11)" not in out and "find_package(pybind11 CONFIG REQUIRED)" in out
    assert f'include_directories("{inc.as_posix()}")' in out
    # everything before the submodule block and from add_subdirectory(src) on is upstream's, unchanged
    head = text[: text.find("set(REQUIRED_SUBMODULES")].replace("VERSION 3.0)", "VERSION 3.5)")
    assert out.startswith(head) and out.endswith(text[text.find("add_subdirectory(src)") :])
    with pytest.raises(cb.BuildError, match=r"CMakeLists\.txt"):
        cb.patch_cmakelists("cmake_minimum_required(VERSION 3.12)\nadd_subdirectory(src)\n", inc)


def test_prepare_writes_a_pip_buildable_copy_and_leaves_the_source_alone(tmp_path):
    src = fake_tree(tmp_path / "CityFlow", UPSTREAM_SHAPE)
    tree = cb.prepare(src, None, tmp_path / "work")
    assert (tree / "pyproject.toml").read_text() == cb.PYPROJECT
    assert str((src / "extern" / "rapidjson" / "include").resolve().as_posix()) in (tree / "CMakeLists.txt").read_text()
    assert (src / "CMakeLists.txt").read_text() == UPSTREAM_SHAPE


def test_clear_errors_for_a_wrong_source_missing_rapidjson_and_missing_tools(tmp_path, monkeypatch, capsys):
    assert data_main(["build-cityflow", "--source", str(tmp_path)]) == 1
    assert "not a CityFlow source tree" in capsys.readouterr().err
    with pytest.raises(cb.BuildError, match="no rapidjson/document.h"):
        cb.rapidjson_include(tmp_path, tmp_path / "nothing")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(cb.BuildError, match=r"needs cmake .* and a C\+\+ compiler"):
        cb.check_tools()


def test_accessors_are_added_after_upstreams_own_getters_and_nothing_else_changes(tmp_path):
    """Change 5: three read-only methods, declared, defined and bound; every upstream line stays, in order."""
    src = VENDOR / "cityflow" if VENDOR.is_dir() else fake_tree(tmp_path / "CityFlow", UPSTREAM_SHAPE)
    tree = cb.prepare(src, VENDOR / "rapidjson" if VENDOR.is_dir() else None, tmp_path / "work")
    for rel in ("src/cityflow.cpp", "src/engine/engine.h", "src/engine/engine.cpp"):
        before, after = (src / rel).read_text(), (tree / rel).read_text()
        added = iter(after.splitlines())
        assert all(line in added for line in before.splitlines())  # upstream's lines, in upstream's order
        assert after != before
    binding = (tree / "src" / "cityflow.cpp").read_text()
    for name in (
        "get_lane_ids",
        "get_lane_vehicle_count_array",
        "get_finished_vehicle_count",
        "get_finished_travel_time",
    ):
        assert f'.def("{name}"' in binding
    assert "getLaneVehicleCounts(bool waitingOnly) const {" in (tree / "src" / "engine" / "engine.cpp").read_text()
    assert "vehicle->getSpeed() < 0.1" in (tree / "src" / "engine" / "engine.cpp").read_text()  # upstream's criterion
    # a source it does not know is refused, not guessed at
    (tree / "src" / "cityflow.cpp").write_text("// another binding\n")
    with pytest.raises(cb.BuildError, match=r"cityflow\.cpp"):
        cb.add_accessors(tree)
