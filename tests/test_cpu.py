"""The learner's torch threads (ipgnn.cpu): chosen from the cores this process may use, never from the
momentary load (a seed must give the same run), with a warning that names the fix when the load says the
cores are taken."""

import ctypes

import pytest
import torch

from ipgnn.cpu import available_memory, memory_source, plan_threads, set_threads, thread_env, usable_cores


@pytest.fixture
def no_omp(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_auto_takes_torchs_default_capped_by_the_usable_cores_less_the_workers(no_omp):
    assert plan_threads("auto", load=0.0, usable=8, default=4).threads == 4
    assert plan_threads("auto", load=0.0, usable=2, default=16).threads == 2  # a taskset of 2 cores
    assert plan_threads("auto", workers=2, load=0.0, usable=4, default=4).threads == 2
    assert plan_threads("auto", workers=4, load=0.0, usable=2, default=2).threads == 1  # never 0


def test_the_load_changes_the_warning_never_the_number(no_omp):
    quiet = plan_threads("auto", load=0.1, usable=2, default=2)
    busy = plan_threads("auto", load=2.0, usable=2, default=2)
    assert quiet.threads == busy.threads == 2
    assert quiet.warning is None and quiet.free == 2
    assert busy.free == 1 and "--threads=1" in busy.warning and "load average of 2.0" in busy.warning


def test_an_explicit_number_and_omp_num_threads_are_used_as_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plan = plan_threads(3, load=0.0, usable=2, default=2)
    assert plan.threads == 3 and "config" in plan.why and plan.warning  # 3 threads on 2 cores: said so
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    plan = plan_threads("auto", load=0.0, usable=8, default=1)
    assert plan.threads == 1 and "OMP_NUM_THREADS=1" in plan.why


def test_set_threads_returns_the_number_before_and_thread_env_pins_children():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == before and torch.get_num_threads() == 1
        assert set_threads(1) == 1  # already so: nothing to change
    finally:
        set_threads(before)
    env = thread_env(2, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert thread_env(0, {"PATH": "/bin"}) == {"PATH": "/bin"}  # 0: as the parent has it


def test_available_memory_reads_the_host_by_default_and_names_its_source():
    host = available_memory()
    assert host is None or host > 0
    assert (available_memory("cpu") is None) == (host is None)  # "cpu" is the default
    assert memory_source("cpu") == "MemAvailable (/proc/meminfo)"
    assert memory_source(torch.device("cuda", 0)) == "free memory on cuda:0"
    if not torch.cuda.is_available():
        assert available_memory("cuda") is None  # no driver: unknown, never an error


def test_usable_cores_reads_the_affinity_mask():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity mask on this OS")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_the_trainer_sets_the_configured_threads_and_close_restores_them(tmp_path, no_omp):
    from ipgnn.config import load_config
    from ipgnn.trainer import Trainer

    from conftest import CONFIGS

    before = torch.get_num_threads()
    cfg = load_config(CONFIGS / "mpe_spread_small.yaml", ["--threads=1", "--model.hidden=16"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        assert torch.get_num_threads() == 1
    finally:
        trainer.close()
    assert torch.get_num_threads() == before


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _heap_and_mapped_after_a_64_mib_tensor() -> tuple[int, int, int]:
    """glibc's own accounting (mallinfo2): bytes in mmapped blocks while a 64 MiB tensor lives, and the
    heap's size (sbrk arena) while it lives and after it is freed."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    t = torch.ones(16 * 2**20)
    alive = libc.mallinfo2()
    del t
    after = libc.mallinfo2()
    return alive.hblkhd, alive.arena, after.arena


def test_kept_freed_memory_puts_large_tensors_on_the_heap_and_keeps_the_heap():
    """With glibc's defaults a 64 MiB tensor is its own mmap (page-faulted afresh each time, unmapped on
    free); with freed memory kept it lives on the heap, and the heap keeps its size after the free."""
    from ipgnn.cpu import keep_freed_memory, release_freed_memory

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 (the probe: AttributeError before glibc 2.33)
    except (OSError, AttributeError):
        pytest.skip("no glibc >= 2.33 (mallinfo2)")
    release_freed_memory()
    mapped, _, _ = _heap_and_mapped_after_a_64_mib_tensor()
    assert mapped >= 64 * 2**20  # the default: an mmap of its own
    assert keep_freed_memory()
    try:
        mapped, heap_alive, heap_after = _heap_and_mapped_after_a_64_mib_tensor()
    finally:
        release_freed_memory()
    assert mapped < 64 * 2**20 and heap_alive >= 64 * 2**20  # on the heap
    assert heap_after >= 64 * 2**20  # not trimmed: the next update reuses it


def test_freed_memory_is_kept_only_with_room_for_twice_the_peak():
    from ipgnn.cpu import keep_freed_memory_if_room, release_freed_memory

    kept, why = keep_freed_memory_if_room(headroom=1e6)  # a million times the peak never fits
    assert not kept and ("does not fit" in why or "no /proc" in why)
    kept, why = keep_freed_memory_if_room(headroom=1.0)
    release_freed_memory()
    assert kept or why in ("not glibc", "no /proc to read the peak memory from")


def test_huge_pages_are_asked_for_only_where_they_change_something():
    from ipgnn.cpu import huge_page_env

    env = huge_page_env({"PATH": "/bin"}, thp_mode="madvise", glibc=(2, 36))
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = huge_page_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, thp_mode="madvise", glibc=(2, 36))
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"  # the user's stay
    assert huge_page_env({}, thp_mode="always", glibc=(2, 36)) is None  # the kernel already does it
    assert huge_page_env({}, thp_mode="never", glibc=(2, 36)) is None
    assert huge_page_env({}, thp_mode="madvise", glibc=(2, 34)) is None  # no such tunable before 2.35
    assert huge_page_env({}, thp_mode="madvise", glibc=None) is None  # not glibc
    assert huge_page_env(env, thp_mode="madvise", glibc=(2, 36)) is None  # already re-executed: no loop
    assert huge_page_env({"IPGNN_HUGE_PAGES": "0"}, thp_mode="madvise", glibc=(2, 36)) is None
