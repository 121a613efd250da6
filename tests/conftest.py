"""Shared fixtures: float64 reference models with non-trivial BatchNorm statistics."""

from __future__ import annotations

import os

import pytest
import torch


def randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm random running stats and affine parameters (non-zero biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=gen) * 2 - 1)
    return model


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(int(os.environ.get("FXPATH_TEST_THREADS", "2")))


def lowered(model: torch.nn.Module, shape: tuple[int, ...]):
    """The IR of ``model`` straight from the lowering, before any pass."""
    from fxpath.lower import has_rule, lower
    from fxpath.tracer import trace

    return lower(trace(model, [shape], has_rule=has_rule))


def assert_same_function(graph, model: torch.nn.Module, shape: tuple[int, ...],
                         batch: int = 3, seed: int = 0) -> None:
    """The IR, run as a network by the reference interpreter, computes ``model``'s outputs."""
    from torch.utils._pytree import tree_leaves

    from fxpath.interpret import run

    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = torch.randn((batch, *shape), generator=gen, dtype=dtype)
    with torch.no_grad():
        want = [t for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor)]
        got = run(graph, model, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
