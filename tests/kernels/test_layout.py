"""`fxpath.layout`: compact values (one interior row per framed axis) against full tensors.

Row selection as runs, layouts brought together, and whole programs: the compact values must
give the numbers of full tensors (``interior=False``) and must actually stay compact between
the compressed convs of a ResNet."""

from __future__ import annotations

import random

import pytest
import torch
import torchvision

import fxpath
from fxpath import layout

F64 = torch.float64


def _framed(channels: int, axes: tuple[tuple[int, int, int], ...],
            gen: torch.Generator) -> torch.Tensor:
    """A full tensor whose rows in ``[lo, size - hi)`` are equal along every axis."""
    stored = torch.rand(1, channels, *(lo + 1 + hi for _, lo, hi in axes), generator=gen,
                        dtype=F64)
    return layout.select(stored, *layout.as_runs(layout.rows(axes, [None] * len(axes))))


@pytest.mark.parametrize("seed", range(20))
def test_runs_select_the_rows_index_select_does(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    idx = sorted(rng.choices(range(n), k=rng.randint(1, 20)))
    x = torch.rand(2, 3, n, 5, dtype=F64)
    got = layout.select(x, layout.runs(idx), None)
    assert torch.equal(got, x.index_select(2, torch.tensor(idx)))
    assert got.is_contiguous() or got.data_ptr() != x.data_ptr()


def test_a_stored_row_stands_for_the_interior() -> None:
    axis = (10, 2, 3)
    assert [layout.stored(axis, r) for r in range(10)] == [0, 1, 2, 2, 2, 2, 2, 3, 4, 5]
    assert layout.target_rows(axis) == [0, 1, 2, 7, 8, 9]
    assert layout.rows((axis,), [None]) == [[0, 1, 2, 2, 2, 2, 2, 3, 4, 5]]
    assert layout.rows((axis,), [layout.target_rows(axis)]) == [None]  # nothing to select


@pytest.mark.parametrize("seed", range(12))
def test_relayout_keeps_the_full_tensor(seed: int) -> None:
    """A value brought to the common layout of two operands, then expanded, is the value
    expanded directly."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    sizes = [rng.randint(8, 20) for _ in range(2)]
    lay_a = tuple((n, rng.randint(0, 2), rng.randint(0, 2)) for n in sizes)
    lay_b = tuple((n, rng.randint(0, 3), rng.randint(0, 3)) for n in sizes)
    full = _framed(3, lay_a, gen)
    stored = layout.select(full, *[layout.runs(layout.target_rows(ax)) for ax in lay_a])
    target = layout.common([lay_a, lay_b])
    assert target is not None
    moved = layout.select(stored, *layout.as_runs(layout.relayout(lay_a, target)))
    back = layout.select(moved, *layout.as_runs(layout.relayout(target, None)))
    assert torch.equal(back, full)


def test_common_layout_needs_every_operand_compact() -> None:
    assert layout.common([((10, 1, 1),), ((10, 2, 0),)]) == ((10, 2, 1),)
    assert layout.common([((10, 1, 1),), None]) is None
    assert layout.common([((10, 4, 5),), ((10, 5, 4),)]) is None  # no interior left


def test_a_resnet_block_stays_compact() -> None:
    """Between the compressed convs of ResNet-18's first stage nothing is expanded; the
    numbers are those of full tensors."""
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    prog = fxpath.compile(model, (3, 128, 128), dtype=F64)
    code = prog.path_network().code
    assert "layer1_0_conv1_linear = fxpath_layout_compact_conv(maxpool," in code
    assert "_full = fxpath_layout_select" not in code.split("layer2_0_conv1_linear")[0]
    dense = fxpath.compile(model, (3, 128, 128), dtype=F64, interior=False)
    assert prog.path_norm().log2 == pytest.approx(dense.path_norm().log2, rel=1e-14)
    want = dense.path_magnitude()
    for name, v in prog.path_magnitude().items():
        torch.testing.assert_close(v, want[name], rtol=1e-10, atol=1e-300)


def test_an_unfoldable_batchnorm_keeps_values_compact() -> None:
    """A BatchNorm after a ReLU (DenseNet's order) is a standalone per-channel affine map: it
    applies to the stored rows, and the next compressed conv reads them compact."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 3)).double().eval()
    with torch.no_grad():
        model[2].running_mean.uniform_(-1, 1)
        model[2].running_var.uniform_(0.5, 2)
        model[2].weight.uniform_(-2, 2)
    prog = fxpath.compile(model, (3, 40, 40), dtype=F64)
    assert any(n.op == "affine" for n in prog.graph)
    code = prog.path_network().code
    assert "_4_linear = fxpath_layout_compact_conv(_2," in code  # the affine's output, compact
    dense = fxpath.compile(model, (3, 40, 40), dtype=F64, interior=False)
    assert prog.path_norm().log2 == pytest.approx(dense.path_norm().log2, rel=1e-14)
    want = dense.path_magnitude()
    for name, v in prog.path_magnitude().items():
        torch.testing.assert_close(v, want[name], rtol=1e-10, atol=1e-300)
