"""ipgnn.precision, the one home of bf16: the autocast region, which algorithms honour it, and the advice."""

import pytest
import torch

import ipgnn.precision as precision
from ipgnn.config import ConfigError


def test_autocast_is_bf16_only_when_asked():
    x = torch.randn(4, 4)
    with precision.autocast("bf16", "cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with precision.autocast("fp32", "cpu"):
        assert (x @ x).dtype == torch.float32


def test_bf16_is_refused_for_an_algorithm_that_does_not_honour_it():
    precision.check_precision("bf16", "ipsac", mixed_precision=True)
    precision.check_precision("fp32", "dgn", mixed_precision=False)
    with pytest.raises(ConfigError, match="'dgn' runs in fp32"):
        precision.check_precision("bf16", "dgn", mixed_precision=False)


@pytest.mark.parametrize("native", [True, False])
def test_advice_follows_the_cpu(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    assert bool(precision.precision_warnings("bf16", "cpu")) == (not native)
    assert precision.precision_warnings("fp32", "cpu") == []
    advice = precision.bf16_advice("fp32", mixed_precision=True)
    assert (precision.BF16_SPEEDUP in advice) == native
    assert precision.bf16_advice("bf16", mixed_precision=True) == ""
    assert precision.bf16_advice("fp32", mixed_precision=False) == ""
