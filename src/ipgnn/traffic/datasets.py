"""The public real-world CityFlow data sets, fetched on demand: ``ipgnn-data fetch NAME``.

Every file is pinned to an immutable address (a raw GitHub URL at a fixed commit of the CoLight
repository, ``wingsweihua/colight``, which republishes the traffic-signal-control sample data in
CityFlow's format) and to its size in bytes; where the file could be verified when this table was
written, also to its SHA-256. A download that does not match its pins is deleted and reported, never
used. Files are written atomically into ``<dest>/<NAME>/roadnet.json`` and ``flow.json``, the layout
that ``env.options.scenario`` expects; ``dest`` defaults to ``$IPGNN_CACHE/datasets`` (or
``~/.cache/ipgnn/datasets``).

====================  ======  =====================================================================
name                  agents  source files (``data/`` at the pinned commit)
====================  ======  =====================================================================
``hangzhou_4x4``          16  ``Hangzhou/4_4/roadnet_4_4.json``, ``anon_4_4_hangzhou_real.json``
``jinan_3x4``             12  ``Jinan/3_4/roadnet_3_4.json``, ``anon_3_4_jinan_real.json``
``newyork_16x3``          48  ``NewYork/16_3/roadnet_16_3.json``, ``anon_16_3_newyork_real.json``
====================  ======  =====================================================================

Every file is pinned to its SHA-256. Hangzhou's are those of the copy these tests run on, whose sizes
and contents at both ends were compared with the pinned commit's files; Jinan's and New York 16x3's
were measured on the files at the pinned commit by a session with network access (issue 14). A file
pinned by size only (none today) makes ``fetch`` print the digest it computed and say that it was not
pinned. New York 28x7 is not part of
the pinned commit, so it has no entry; any scenario directory can be used with ``env.options.scenario``,
and ``--base-url`` points ``fetch`` at a mirror with the same ``data/`` layout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

COMMIT = "c3c4495cea42714689d89eced8972a642ca0e4e9"
BASE_URL = f"https://raw.githubusercontent.com/wingsweihua/colight/{COMMIT}/data"


@dataclass(frozen=True)
class RemoteFile:
    path: str  # below ``data/`` of the pinned commit
    size: int  # bytes
    sha256: str | None = None  # None: pinned by commit and size only (see the module docstring)


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    num_agents: int
    roadnet: RemoteFile
    flow: RemoteFile
    more_flows: tuple[tuple[str, RemoteFile], ...] = ()  # other flows on the same roads: (local name, file)

    def files(self) -> dict[str, RemoteFile]:
        """Local file name -> pinned remote file; a scenario reads ``flow.json`` unless
        ``env.options.flow`` names another of them."""
        return {"roadnet.json": self.roadnet, "flow.json": self.flow, **dict(self.more_flows)}


_HANGZHOU_ROADNET = RemoteFile(  # one road network, two flows (HZ1, HZ2)
    "Hangzhou/4_4/roadnet_4_4.json", 847012, "11e2fe89f632e43e81f56ea87a308d544b66f9c5af8a410e16149668d6d376c1"
)

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "hangzhou_4x4",
            "Hangzhou, Gudang sub-district, 4x4, real flow of one hour (Fig. 5a)",
            16,
            _HANGZHOU_ROADNET,
            RemoteFile(
                "Hangzhou/4_4/anon_4_4_hangzhou_real.json",
                899200,
                "595a6140e6649efe5be1b274eb8b03e8c4029e517c9ac2ad53c9ea556a414213",
            ),
        ),
        Dataset(
            "hangzhou_4x4_5816",
            "Hangzhou 4x4, the second real flow of one hour (5816 vehicles; the field's HZ2)",
            16,
            _HANGZHOU_ROADNET,
            RemoteFile(
                "Hangzhou/4_4/anon_4_4_hangzhou_real_5816.json",
                2101857,
                "e9b9e31e9a9a5f59d1a668b242319c3ef69f1ab724e2f2b618ed4886cc1a7a9c",
            ),
        ),
        Dataset(
            "jinan_3x4",
            "Jinan, Dongfeng sub-district, 3x4, three real flows of one hour (the field's JN1-3)",
            12,
            RemoteFile(
                "Jinan/3_4/roadnet_3_4.json", 637327, "55abc036ac4ac48705301f4cf46ea80d8d88a82abb9ed68404bedb96eb3cf81d"
            ),
            RemoteFile(
                "Jinan/3_4/anon_3_4_jinan_real.json",
                1872590,
                "233739633ef0b637125cb304dfffff9488503bac6e6861ca39243cc8ffdcebd5",
            ),
            (  # the field's JN2 and JN3 (JN1 is flow.json)
                (
                    "flow_2000.json",
                    RemoteFile(
                        "Jinan/3_4/anon_3_4_jinan_real_2000.json",
                        1302258,
                        "d0931c1b759479f9e748d69c16414020bfba03d555dcc6cdf7223a0c18cb9e69",
                    ),
                ),
                (
                    "flow_2500.json",
                    RemoteFile(
                        "Jinan/3_4/anon_3_4_jinan_real_2500.json",
                        1635277,
                        "4245107cc7ce91b9699519f2c1258be4397e83291080a43cb0b93479557739cd",
                    ),
                ),
            ),
        ),
        Dataset(
            "newyork_16x3",
            "New York, upper east side of Manhattan, 16x3, real flow of one hour",
            48,
            RemoteFile(
                "NewYork/16_3/roadnet_16_3.json",
                2527684,
                "918fe133b050f4c6163252cc966fa0049b7e02edca4af15527adecd836e5098c",
            ),
            RemoteFile(
                "NewYork/16_3/anon_16_3_newyork_real.json",
                1074716,
                "f8cbaaaef00f172f6d310807c61584f104ff13b8430b092ddc34636cfc13ccd4",
            ),
        ),
    )
}


class DatasetError(RuntimeError):
    """A data set could not be fetched or did not match its pins; the message says which file and why."""


def default_dest(write: bool = True) -> Path:
    """``<cache>/datasets`` (:func:`ipgnn.cache.cache_dir`): downloads are kept, so an unwritable cache is an
    error (:class:`ipgnn.cache.CacheDirError`), never a temporary stand-in."""
    from ipgnn.cache import cache_dir

    return cache_dir("datasets", write=write)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, out: Path, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(out, "wb") as f:
            shutil.copyfileobj(resp, f)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(
            f"could not download {url}: {reason}. Check the connection, or pass --base-url with "
            "a mirror of the same data/ layout, or put roadnet.json and flow.json in a directory "
            "yourself and point env.options.scenario at it"
        ) from None


def verify(path: Path, remote: RemoteFile) -> str | None:
    """Check ``path`` against its pins; return its SHA-256, or raise :class:`DatasetError`."""
    size = path.stat().st_size
    if size != remote.size:
        raise DatasetError(f"{path}: {size} bytes, expected {remote.size} (pinned for {remote.path})")
    digest = _sha256(path)
    if remote.sha256 is not None and digest != remote.sha256:
        raise DatasetError(f"{path}: SHA-256 {digest}, expected {remote.sha256} (pinned for {remote.path})")
    try:
        with open(path, "rb") as f:
            json.load(f)
    except ValueError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    return digest


def fetch(
    name: str,
    dest: str | Path | None = None,
    base_url: str = BASE_URL,
    force: bool = False,
    timeout: float = 60.0,
    echo: Callable[[str], None] = print,
) -> Path:
    """Download data set ``name`` into ``<dest>/<name>/`` and return that directory.

    Files already present and matching their pins are kept (so a second call costs nothing); a file
    that fails its pins is never left in place. ``base_url`` replaces the pinned address's prefix
    (``.../data``), for mirrors; ``file://`` URLs work too."""
    if name not in DATASETS:
        raise DatasetError(f"unknown data set '{name}'; known: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[name]
    target = Path(dest).expanduser() if dest is not None else default_dest()
    target = target / name
    target.mkdir(parents=True, exist_ok=True)
    for local, remote in ds.files().items():
        out = target / local
        if out.is_file() and not force:
            try:
                verify(out, remote)
                echo(f"{out}: present and verified")
                continue
            except DatasetError as exc:
                echo(f"{out}: {exc}; downloading again")
        url = f"{base_url.rstrip('/')}/{remote.path}"
        echo(f"downloading {url} ({remote.size / 1e6:.1f} MB)")
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{local}.", suffix=".part")
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            _download(url, tmp_path, timeout)
            digest = verify(tmp_path, remote)
            os.replace(tmp_path, out)
        finally:
            tmp_path.unlink(missing_ok=True)
        if remote.sha256 is None:
            echo(f"{out}: size matches the pin; SHA-256 {digest} (not pinned: compare it with a trusted copy)")
        else:
            echo(f"{out}: SHA-256 verified")
    echo(f"{name}: {ds.num_agents} intersections in {target}; use it with --env.options.scenario={target}")
    return target


def main(argv: list[str] | None = None) -> int:
    """``ipgnn-data list``, ``ipgnn-data fetch NAME [--dest DIR] [--base-url URL] [--force]`` and
    ``ipgnn-data build-cityflow [--source DIR] [--rapidjson DIR]`` (:mod:`ipgnn.traffic.cityflow_build`)."""
    import argparse
    import sys

    from ipgnn.cache import CacheDirError

    parser = argparse.ArgumentParser(
        prog="ipgnn-data", description="Fetch the public CityFlow data sets, and build the CityFlow engine."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the data sets this command knows, with their pinned sources")
    p = sub.add_parser("fetch", help="download and verify data sets")
    p.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(DATASETS)}, or 'all'")
    p.add_argument(
        "--dest", help="directory to write <NAME>/ into (default: $IPGNN_CACHE/datasets, or ~/.cache/ipgnn/datasets)"
    )
    p.add_argument("--base-url", default=BASE_URL, help="mirror of the pinned data/ directory")
    p.add_argument("--force", action="store_true", help="download even when verified files are present")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per connection attempt")
    from ipgnn.traffic import cityflow_build

    cityflow_build.add_arguments(sub.add_parser("build-cityflow", help=cityflow_build.HELP))
    args = parser.parse_args(argv)
    if args.cmd == "build-cityflow":
        return cityflow_build.run(args)
    if args.cmd == "list":
        for ds in DATASETS.values():
            pinned = "sha256" if all(f.sha256 for f in ds.files().values()) else "size only"
            print(f"{ds.name:14s} {ds.num_agents:3d} agents  [{pinned}]  {ds.description}")
        print(f"source: {BASE_URL}")
        return 0
    names = list(DATASETS) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        print(f"error: unknown data set(s) {unknown}; known: {', '.join(DATASETS)}", file=sys.stderr)
        return 2
    for n in names:
        try:
            fetch(n, args.dest, args.base_url, args.force, args.timeout)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except CacheDirError as exc:  # the default --dest: IPGNN_CACHE empty, or the cache not writable
            print(f"error: {exc}; or pass --dest DIR", file=sys.stderr)
            return 2
    return 0
