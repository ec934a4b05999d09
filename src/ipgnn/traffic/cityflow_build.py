"""``ipgnn-data build-cityflow``: build the real CityFlow engine on current Python and install it.

CityFlow is not on PyPI, and its repository as published does not build on Python >= 3.11: its
``extern/pybind11`` submodule pins a pybind11 2.3 fork whose ``cast.h`` fails with "invalid use of
incomplete type 'PyFrameObject'", and CMake >= 4 rejects its ``cmake_minimum_required(VERSION 3.0)``.
This command builds the upstream simulation code unchanged. In a temporary copy of the source tree it
changes the build description and adds four read-only accessors:

1. ``CMakeLists.txt``: the submodule block and ``add_subdirectory(extern/pybind11)`` become
   ``find_package(pybind11 CONFIG REQUIRED)``, found through the running Python's ``pybind11`` from PyPI
   (``python -m pybind11 --cmakedir``), so any pybind11 that supports the running Python is used;
2. ``CMakeLists.txt``: ``include_directories`` points at RapidJSON's ``include/`` wherever it is
   (``--rapidjson``, the source tree's ``extern/rapidjson``, or a download at the pinned commit);
3. ``CMakeLists.txt``: the minimum CMake version is raised from 3.0 to 3.5 (CMake 4 accepts it);
4. a ``pyproject.toml`` declaring setuptools as the build backend, so that pip builds upstream's own
   ``setup.py`` (its CMake extension) into a wheel. The result is an ordinary pip package,
   ``CityFlow 0.1``: ``pip uninstall cityflow`` removes it;
5. four read-only methods on ``Engine`` (declared in ``engine/engine.h``, defined at the end of
   ``engine/engine.cpp``, bound in ``cityflow.cpp``): ``get_lane_ids()`` (every lane, in the road network's
   order), ``get_lane_vehicle_count_array(waiting=False)`` (a NumPy ``int32`` array of the vehicles on each
   of those lanes, or of the halted ones with upstream's own criterion, speed < 0.1 m/s) and
   ``get_finished_vehicle_count()`` and ``get_finished_travel_time()`` (the counter and the sum upstream
   already keeps for its average travel time: their ratio is the arrived-vehicles-only average).
   Why: upstream's only per-lane getters build a ``std::map`` of string ids and a Python ``dict`` at every
   call, which the travel-time reward needs every simulated second. Measured with
   ``benchmarks/bench_traffic.py``, that reading alone cost 0.6 ms per call on a 15x15 grid (2 880 lanes),
   almost as much as the engine's 0.7 ms step, and counting finished vehicles meant listing every vehicle
   every second. The additions read the same state as ``get_lane_vehicle_count`` and
   ``get_lane_waiting_vehicle_count``; the adapter (:mod:`ipgnn.traffic.cityflow_engine`) uses them when
   they are there and upstream's dictionaries otherwise, with the same results (tested).

Sources: ``--source DIR`` takes a local CityFlow tree (a clone, or an unpacked archive); without it the
command downloads CityFlow and RapidJSON at the commits below from GitHub's archive service. Checks up
front: ``cmake`` and a C++ compiler on ``PATH``, each named in the error with how to install it.

The module imports nothing but the standard library, so it also runs as a script before the package is
installed: ``python src/ipgnn/traffic/cityflow_build.py --source DIR`` (``.ci/run`` does).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

CITYFLOW_REPO = "cityflow-project/CityFlow"
CITYFLOW_COMMIT = "81ee0f47659ca66177a71f81676691c58ee89184"  # 2025-08-19, the tree ../shared/vendor holds
RAPIDJSON_REPO = "Tencent/rapidjson"
RAPIDJSON_COMMIT = "24b5e7a8b27f42fa16b96fc70aade9106cf7102f"  # the submodule commit CityFlow pins

PYPROJECT = """[build-system]
requires = ["setuptools>=61", "pybind11>=2.10"]
build-backend = "setuptools.build_meta"
"""


class BuildError(RuntimeError):
    """A missing tool, an unusable source tree or a failed build, with what to do about it."""


def _archive(repo: str, commit: str, dest: Path) -> Path:
    """Download ``repo`` at ``commit`` from GitHub's archive service and unpack it under ``dest``."""
    url = f"https://codeload.github.com/{repo}/tar.gz/{commit}"
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except OSError as exc:
        raise BuildError(
            f"cannot download {repo} at {commit[:12]} from {url} ({exc}); without network, pass "
            "--source DIR (a CityFlow source tree) and --rapidjson DIR (RapidJSON, or its include/)"
        ) from None
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")
    (top,) = [p for p in dest.iterdir() if p.is_dir() and p.name.lower().startswith(repo.split("/")[1].lower())]
    return top


def check_tools() -> None:
    """``cmake`` and a C++ compiler must be on ``PATH``."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake (pip install cmake, apt install cmake, brew install cmake or conda install cmake)")
    cxx = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if cxx is None or shutil.which(cxx.split()[0]) is None:
        missing.append(
            "a C++ compiler (apt install g++, xcode-select --install on macOS, or conda install cxx-compiler)"
        )
    if missing:
        raise BuildError("building CityFlow needs " + " and ".join(missing))


def rapidjson_include(source: Path, rapidjson: Path | None) -> Path | None:
    """RapidJSON's ``include/`` directory: ``--rapidjson`` (the repository or its ``include/``), the source
    tree's ``extern/rapidjson`` submodule, or a ``rapidjson`` folder beside the source tree."""
    candidates = (
        [rapidjson] if rapidjson is not None else [source / "extern" / "rapidjson", source.parent / "rapidjson"]
    )
    for c in candidates:
        for inc in (c / "include", c):
            if (inc / "rapidjson" / "document.h").is_file():
                return inc.resolve()
    if rapidjson is not None:
        raise BuildError(f"--rapidjson {rapidjson}: no rapidjson/document.h under it or its include/")
    return None


def patch_cmakelists(text: str, rapidjson_inc: Path) -> str:
    """The three changes to upstream's ``CMakeLists.txt`` (module docstring); refuses a file it does not
    recognise rather than guessing."""
    out, n = re.subn(r"cmake_minimum_required\(VERSION 3\.0\)", "cmake_minimum_required(VERSION 3.5)", text)
    start, end = out.find("set(REQUIRED_SUBMODULES"), out.find("add_subdirectory(src)")
    if n != 1 or start < 0 or end < start or "add_subdirectory(extern/pybind11)" not in out[start:end]:
        raise BuildError(
            "CityFlow's CMakeLists.txt is not the one this command knows how to adapt (upstream commit "
            f"{CITYFLOW_COMMIT[:12]}); build it by hand as the README describes"
        )
    finder = (
        'execute_process(COMMAND "${PYTHON_EXECUTABLE}" -m pybind11 --cmakedir\n'
        "                OUTPUT_VARIABLE pybind11_DIR OUTPUT_STRIP_TRAILING_WHITESPACE)\n"
        "find_package(pybind11 CONFIG REQUIRED)\n"
        f'include_directories("{rapidjson_inc.as_posix()}")\n\n'
    )
    return out[:start] + finder + out[end:]


# change 5 (module docstring): (file, the unique upstream line the text goes after, the text)
ACCESSORS = (
    (
        "src/engine/engine.h",
        "        std::map<std::string, int> getLaneWaitingVehicleCount() const;\n",
        "\n        // added by ipgnn-data build-cityflow: read-only, lanes in the road network's order\n"
        "        std::vector<std::string> getLaneIds() const;\n\n"
        "        std::vector<int> getLaneVehicleCounts(bool waitingOnly) const;\n\n"
        "        int getFinishedVehicleCount() const { return finishedVehicleCnt; }\n\n"
        "        double getFinishedTravelTime() const { return cumulativeTravelTime; }\n",
    ),
    ("src/cityflow.cpp", '#include "pybind11/stl.h"\n', '#include "pybind11/numpy.h"\n'),
    (
        "src/cityflow.cpp",
        '        .def("get_lane_waiting_vehicle_count", &CityFlow::Engine::getLaneWaitingVehicleCount)\n',
        '        .def("get_lane_ids", &CityFlow::Engine::getLaneIds)\n'
        '        .def("get_lane_vehicle_count_array", [](const CityFlow::Engine &e, bool waiting) {\n'
        "                std::vector<int> v = e.getLaneVehicleCounts(waiting);\n"
        "                return py::array_t<int>(v.size(), v.data());\n"
        '            }, "waiting"_a=false)\n'
        '        .def("get_finished_vehicle_count", &CityFlow::Engine::getFinishedVehicleCount)\n'
        '        .def("get_finished_travel_time", &CityFlow::Engine::getFinishedTravelTime)\n',
    ),
)
ACCESSOR_DEFINITIONS = """
namespace CityFlow {
    // added by ipgnn-data build-cityflow: the counts of getLaneVehicleCount and getLaneWaitingVehicleCount,
    // in the road network's lane order, without building a map of string ids
    std::vector<std::string> Engine::getLaneIds() const {
        std::vector<std::string> ret;
        ret.reserve(roadnet.getLanes().size());
        for (const Lane *lane : roadnet.getLanes()) ret.push_back(lane->getId());
        return ret;
    }

    std::vector<int> Engine::getLaneVehicleCounts(bool waitingOnly) const {
        std::vector<int> ret;
        ret.reserve(roadnet.getLanes().size());
        for (const Lane *lane : roadnet.getLanes()) {
            if (!waitingOnly) {
                ret.push_back((int) lane->getVehicleCount());
                continue;
            }
            int cnt = 0;
            for (Vehicle *vehicle : lane->getVehicles())
                if (vehicle->getSpeed() < 0.1) cnt += 1;  // upstream's waiting criterion
            ret.push_back(cnt);
        }
        return ret;
    }
}
"""


def add_accessors(tree: Path) -> None:
    """Change 5 (module docstring), refusing sources it does not recognise rather than guessing."""
    files = {rel: (tree / rel).read_text() if (tree / rel).is_file() else "" for rel, _, _ in ACCESSORS}
    files["src/engine/engine.cpp"] = (
        (tree / "src/engine/engine.cpp").read_text() if (tree / "src/engine/engine.cpp").is_file() else ""
    )
    for rel, anchor, text in ACCESSORS:  # every check before any write
        if files[rel].count(anchor) != 1 or not files["src/engine/engine.cpp"]:
            raise BuildError(
                f"CityFlow's {rel} is not the one this command knows how to extend (upstream commit "
                f"{CITYFLOW_COMMIT[:12]}); build it by hand as the README describes"
            )
        files[rel] = files[rel].replace(anchor, anchor + text)
    files["src/engine/engine.cpp"] += ACCESSOR_DEFINITIONS
    for rel, text in files.items():
        (tree / rel).write_text(text)


def prepare(source: Path, rapidjson: Path | None, workdir: Path) -> Path:
    """A patched copy of ``source`` in ``workdir``, ready for ``pip install``."""
    if not (source / "CMakeLists.txt").is_file() or not (source / "src" / "cityflow.cpp").is_file():
        raise BuildError(f"--source {source}: not a CityFlow source tree (no CMakeLists.txt and src/cityflow.cpp)")
    tree = workdir / "cityflow"
    shutil.copytree(source, tree, ignore=shutil.ignore_patterns(".git", "build", "*.so"))
    inc = rapidjson_include(source, rapidjson)
    if inc is None:
        inc = _archive(RAPIDJSON_REPO, RAPIDJSON_COMMIT, workdir) / "include"
    cmake = tree / "CMakeLists.txt"
    cmake.write_text(patch_cmakelists(cmake.read_text(), inc))
    add_accessors(tree)
    (tree / "pyproject.toml").write_text(PYPROJECT)
    return tree


def build(source: Path | None = None, rapidjson: Path | None = None, verbose: bool = False) -> str:
    """Build and install CityFlow into the running Python's environment; return where ``cityflow`` imports
    from."""
    check_tools()
    with tempfile.TemporaryDirectory(prefix="ipgnn-cityflow-build-") as tmp:
        work = Path(tmp)
        if source is None:
            source = _archive(CITYFLOW_REPO, CITYFLOW_COMMIT, work / "download")
        tree = prepare(Path(source).expanduser().resolve(), rapidjson and Path(rapidjson).expanduser(), work)
        # the build backend and pybind11 come into the active environment, then pip builds without
        # isolation, so an offline machine with a local index (or the packages already there) suffices
        pip = [sys.executable, "-m", "pip"]
        subprocess.run(pip + ["install", "-q", "setuptools>=61", "pybind11>=2.10"], check=True)
        cmd = (
            pip
            + ["install", "--no-build-isolation", "--force-reinstall", "--no-deps"]
            + ([] if verbose else ["-q"])
            + [str(tree)]
        )
        env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
        res = subprocess.run(cmd, env=env, capture_output=not verbose, text=True)
        if res.returncode != 0:
            tail = "\n".join(((res.stdout or "") + (res.stderr or "")).splitlines()[-25:])
            raise BuildError(f"building CityFlow failed (pip exit code {res.returncode}); the last lines:\n{tail}")
    probe = subprocess.run(
        [sys.executable, "-c", "import cityflow; print(cityflow.__file__)"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        raise BuildError(f"CityFlow built but does not import: {probe.stderr.strip().splitlines()[-1:]}")
    return probe.stdout.strip()


HELP = (
    "build the CityFlow engine against pybind11 from PyPI and install it into this Python environment "
    "(needs cmake and a C++ compiler)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", help=f"a local CityFlow source tree (default: download the pinned commit {CITYFLOW_COMMIT[:12]})"
    )
    parser.add_argument(
        "--rapidjson",
        help="RapidJSON (the repository or its include/); default: the source "
        "tree's extern/rapidjson, a rapidjson/ beside it, or a download at the "
        "pinned commit",
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")


def run(args: argparse.Namespace) -> int:
    try:
        where = build(args.source and Path(args.source), args.rapidjson and Path(args.rapidjson), args.verbose)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"CityFlow installed: import cityflow -> {where} (pip uninstall cityflow removes it)")
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="cityflow_build.py", description=HELP)
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
