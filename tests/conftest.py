"""Shared fixtures: float64 reference models with non-trivial BatchNorm statistics."""

from __future__ import annotations

import ctypes
import gc
import os
from collections.abc import Callable, Iterator

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


def small_head(vgg: torch.nn.Module, num_classes: int = 10) -> torch.nn.Module:
    """A torchvision VGG with its 4096-wide classifier (120M of its parameters, 1 GB in
    float64) replaced by a narrow one of the same form: Linear-ReLU-Dropout twice, then Linear,
    after a 2x2 adaptive pool. Keeps the test tier's memory small."""
    vgg.avgpool = torch.nn.AdaptiveAvgPool2d(2)
    vgg.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 4, 64), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(True), torch.nn.Dropout(),
        torch.nn.Linear(64, num_classes))
    return vgg


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``: hand freed heap pages back to the OS (a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return lambda: None


_TRIM = _malloc_trim()


@pytest.fixture(autouse=True, scope="module")
def _release_memory(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test module, free what it left: one module's big models must not add to the
    next one's peak (the default tier stays under 4 GB). ``FXPATH_TEST_RSS=1`` prints the
    process's current and peak resident memory after each module (where the peak comes from)."""
    yield
    gc.collect()
    _TRIM()
    if os.environ.get("FXPATH_TEST_RSS"):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        with open("/proc/self/statm") as f:
            now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
        print(f"\n[rss] {request.node.nodeid}: {now:.2f} GB now, {peak:.2f} GB peak")


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(int(os.environ.get("FXPATH_TEST_THREADS", "2")))


def lowered(model: torch.nn.Module, shape: tuple[int, ...]):
    """The IR of ``model`` straight from the lowering, before any pass."""
    from fxpath.frontend.lower.fx import has_rule, lower
    from fxpath.frontend.tracer import trace

    return lower(trace(model, [shape], has_rule=has_rule))


def assert_same_function(graph, model: torch.nn.Module, shape: tuple[int, ...],
                         batch: int = 3, seed: int = 0) -> None:
    """The IR, run as a network by the reference interpreter, computes ``model``'s outputs."""
    from torch.utils._pytree import tree_leaves

    from fxpath.codegen.interpret import run

    gen = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    x = torch.randn((batch, *shape), generator=gen, dtype=dtype)
    with torch.no_grad():
        want = [t for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor)]
        got = run(graph, model, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)
