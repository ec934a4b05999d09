"""ipgnn.ops.smallest_k: the same selection as topk on every path, ties by index on the CPU path."""

from __future__ import annotations

import pytest
import torch

from ipgnn import ops
from ipgnn.graphs import knn_edges


@pytest.fixture
def one_thread():
    """The tournament's size threshold grows with the thread count: pin one thread so that the
    fast path is taken on these sizes on any machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _check(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    v, i = ops.smallest_k(values, k)
    ref = values.topk(k, dim=-1, largest=False, sorted=True).values
    assert v.dtype == values.dtype and i.dtype == torch.long and v.shape == i.shape == (*values.shape[:-1], k)
    torch.testing.assert_close(v, ref, rtol=0, atol=0)
    torch.testing.assert_close(values.gather(-1, i), ref, rtol=0, atol=0)  # the indices point at them
    assert (i.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct candidates
    return v, i


@pytest.mark.parametrize(
    "shape,k",
    [
        ((64, 200, 200), 5),
        ((64, 200, 200), 8),
        ((16, 100, 97), 5),
        ((8, 64, 201), 3),
        ((2, 1225, 1225), 8),
        ((40000, 4), 1),
        ((37, 200, 200), 5),
        ((70000, 16), 3),
    ],
)  # the last two: blocks of rows
def test_fast_path_selects_what_topk_selects(shape, k):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=gen) * 50
    x[..., :3] = float("inf")  # candidates that must not be chosen
    _check(x, k)


def test_fast_path_is_taken_where_documented_and_falls_back_elsewhere(monkeypatch):
    calls = []
    real = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **kw: calls.append(self.shape) or real(self, *a, **kw))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        big = torch.rand(4, 100, 100)  # 4e4 values: above the one-thread crossover (2**15)
        _check(big, 5)
        assert calls == [big.shape]  # only _check's own reference call: the selection did not use topk
        calls.clear()
        # small, float64, M < 4k, M > 512
        for x in (torch.rand(4, 10, 10), big.double(), torch.rand(4, 100, 12), torch.rand(64, 600)):
            ops.smallest_k(x, 5)
        assert len(calls) == 4
        calls.clear()
        torch.set_num_threads(2)  # topk runs rows in parallel: the crossover is 4x higher
        ops.smallest_k(big, 5)
        assert len(calls) == 1
    finally:
        torch.set_num_threads(threads)


def test_ties_are_broken_by_index_on_the_fast_path():
    x = torch.full((64, 100, 100), 7.0)
    x[:, :, 40:60] = 1.0  # twenty equal smallest values per row
    x[:, :, 90] = 0.5
    v, i = ops.smallest_k(x, 6)
    assert torch.equal(v[0, 0], torch.tensor([0.5, 1.0, 1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(i, torch.tensor([90, 40, 41, 42, 43, 44]).expand(64, 100, 6))


@pytest.mark.parametrize("m", [100, 97])  # 97: groups of unequal size, padded
def test_rows_with_fewer_finite_candidates_than_k_end_with_inf(m, one_thread):
    x = torch.full((64, 100, m), float("inf"))
    x[:, :, 5] = 2.0
    x[:, :, 77] = 1.0
    v, i = _check(x, 4)  # distinct indices, all real candidates (the padding never comes out)
    assert torch.equal(v[..., :2], torch.tensor([1.0, 2.0]).expand(64, 100, 2))
    assert torch.equal(i[..., :2], torch.tensor([77, 5]).expand(64, 100, 2))
    assert torch.isinf(v[..., 2:]).all() and ((i >= 0) & (i < m)).all()
    _check(torch.full((64, 100, m), float("inf")), 5)


def test_zero_distances_survive_flush_to_zero(one_thread):
    """Coincident agents give zero squared distances; a zero value's key must not be a float64 denormal,
    which flush-to-zero (switched on by any library built with fast-math) would read as 0."""
    x = torch.rand(64, 100, 100, generator=torch.Generator().manual_seed(5)) + 1
    x[..., 9] = 0.0
    x[..., 19] = 0.0
    x[..., 50] = 1e-42  # a float32 denormal
    was = torch.set_flush_denormal(True)
    try:
        if not was and not torch.set_flush_denormal(True):
            pytest.skip("this CPU cannot flush denormals")
        v, i = ops.smallest_k(x, 5)
    finally:
        torch.set_flush_denormal(False)
    assert torch.equal(i[..., :2], torch.tensor([9, 19]).expand(64, 100, 2))
    assert (v[..., :2] == 0).all() and (i[..., 2] == 50).all()


@pytest.mark.parametrize("bad", [float("nan"), -float("nan"), -1.0, "payload"])
def test_negative_values_and_nans_are_answered_like_topk(bad, one_thread):
    x = torch.rand(64, 100, 100, generator=torch.Generator().manual_seed(6))
    if bad == "payload":
        x.view(torch.int32)[3, 4, 7] = 0x7FFFFFFF  # a NaN whose bits overflow the key
    else:
        x[3, 4, 7] = bad
    v, i = ops.smallest_k(x, 5)
    ref = x.topk(5, dim=-1, largest=False, sorted=True)
    torch.testing.assert_close(v, ref.values, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(i, ref.indices)


def test_first_use_under_inference_mode_and_gradients(one_thread):
    x = torch.rand(64, 100, 101)
    ops._local.buffers = {}
    with torch.inference_mode():
        ops.smallest_k(x, 5)
    _check(x, 5)  # the buffers made under inference mode are writable outside it
    y = x.clone().requires_grad_(True)
    v, _ = ops.smallest_k(y, 5)
    v.sum().backward()
    assert y.grad.sum() == 64 * 100 * 5


def test_k_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"k must be in \[0, 10\]"):
        ops.smallest_k(torch.rand(3, 10), 11)


def test_knn_from_given_squared_distances_equals_knn_from_positions():
    gen = torch.Generator().manual_seed(1)
    pos = torch.rand(8, 200, 2, generator=gen) * 10
    d2 = ((pos.unsqueeze(1) - pos.unsqueeze(2)) ** 2).sum(-1)
    d2.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    given = d2.clone()
    edges = knn_edges(pos, 8, sq_dist=d2)
    assert torch.equal(d2, given)  # not modified
    assert torch.equal(edges, knn_edges(pos, 8))
    assert torch.equal(edges[3], knn_edges(pos[3], 8, sq_dist=d2[3]))
    with pytest.raises(ValueError, match="sq_dist must have shape"):
        knn_edges(pos, 8, sq_dist=d2[:, :10])


def test_threads_do_not_share_work_buffers():
    import threading

    x = torch.rand(64, 200, 200, generator=torch.Generator().manual_seed(3))
    want = x.topk(5, dim=-1, largest=False).values
    wrong = []

    def select():
        for _ in range(4):
            wrong.append(not torch.equal(ops.smallest_k(x, 5)[0], want))

    threads = [threading.Thread(target=select) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wrong) == 12 and not any(wrong)


def test_non_contiguous_views_on_the_fast_path():
    """A scenario's agent block of the world's contact geometry is a strided view (predator: agents,
    prey and obstacles collide; the agents are the leading rows and columns)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        base = torch.rand(16, 125, 187, generator=torch.Generator().manual_seed(4)) * 10
        view = base[:, :100, :100]
        assert not view.is_contiguous()
        _check(view, 5)
        _check(base.transpose(1, 2)[:, :, :100], 5)
    finally:
        torch.set_num_threads(threads)
