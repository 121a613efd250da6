"""ConvTranspose (U-Net decoders): path-norm against the layers' explicit matrices."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_function, lowered

import fxpath


def _matrix(layer: torch.nn.Module, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The linear map of a bias-free layer as a dense matrix (its Jacobian)."""
    x = torch.zeros((1, *in_shape), dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: layer(t).flatten(), x)
    return jac.reshape(jac.shape[0], -1)


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_conv_transpose_chain_matches_explicit_matrices(q: float) -> None:
    torch.manual_seed(0)
    up = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                  bias=False)
    down = torch.nn.Conv2d(6, 3, 3, padding=1, bias=False)
    net = torch.nn.Sequential(up, torch.nn.ReLU(), down).double().eval()
    shape = (4, 3, 3)
    m1 = _matrix(up.double(), shape)
    m2 = _matrix(down.double(), (6, 6, 6))
    ones = torch.ones(m1.shape[1], dtype=torch.float64)
    expected = (m2.abs() ** q @ (m1.abs() ** q @ ones)).sum() ** (1 / q)
    got = fxpath.compile(net, shape, dtype=torch.float64).path_norm(q)
    assert got.value == pytest.approx(expected.item(), rel=1e-10)
    assert_same_function(fxpath.compile(net, shape, dtype=torch.float64).graph, net, shape)
    assert_same_function(lowered(net, shape), net, shape)


def test_bilinear_upsampling_after_a_conv_is_supported() -> None:
    """Interpolation is a fixed linear map (`fxpath.ops.resample`; its own tests are in
    tests/ops/test_resample.py): a bilinear decoder compiles and computes the model's function."""
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1),
                              torch.nn.Upsample(scale_factor=2, mode="bilinear")).double().eval()
    prog = fxpath.compile(net, (2, 4, 4), dtype=torch.float64)
    assert [n.op for n in prog.graph][-2] == "resample"
    assert_same_function(prog.graph, net, (2, 4, 4))
