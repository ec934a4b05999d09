"""The learner's torch threads (ipgnn.cpu): chosen from the cores this process may use, never from the
momentary load (a seed must give the same run), with a warning that names the fix when the load says the
cores are taken."""

import pytest
import torch

from ipgnn.cpu import plan_threads, usable_cores


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


def _faults_of_a_fresh_64_mib_tensor() -> int:
    import resource

    torch.ones(16 * 2**20)  # allocated, touched, freed: warms whatever the allocator keeps
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_kept_freed_memory_serves_the_next_large_tensor_without_page_faults():
    """glibc maps every block above 32 MiB afresh (a page fault per 4 KiB page, 16 384 for 64 MiB); with
    freed memory kept, the next tensor of the same size reuses the heap."""
    from ipgnn.cpu import keep_freed_memory, release_freed_memory

    if not keep_freed_memory():
        pytest.skip("not glibc")
    try:
        kept = _faults_of_a_fresh_64_mib_tensor()
        release_freed_memory()
        released = _faults_of_a_fresh_64_mib_tensor()
    finally:
        release_freed_memory()
    assert released > 8000 and kept < 1000, (released, kept)


def test_freed_memory_is_kept_only_with_room_for_twice_the_peak():
    from ipgnn.cpu import keep_freed_memory_if_room, release_freed_memory

    kept, why = keep_freed_memory_if_room(headroom=1e6)  # a million times the peak never fits
    assert not kept and ("does not fit" in why or "no /proc" in why)
    kept, why = keep_freed_memory_if_room(headroom=1.0)
    release_freed_memory()
    assert kept or why in ("not glibc", "no /proc to read the peak memory from")
