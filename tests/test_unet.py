"""U-Nets: a tiny one against brute-force path enumeration, a 3-d one of standard layers, and
the constant-interior frames that interpolation passes on.

The tiny U-Net (`bruteforce.cases.tiny_unet`) goes down by max-pooling and up by a transposed conv
(with a folded BatchNorm) and by bilinear upsampling, concatenates skips, and returns two
outputs. Its path-norms, scores and path-metric must be the enumeration's (float64, 1e-10),
and the Lipschitz certificate must hold on every pixel of both outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from bruteforce import builders, cases, oracle
from conftest import assert_same_function, randomize_batchnorm
from test_dense import dense_checks, flat_outputs, perturbed

import fxpath
from fxpath.codegen.frames import interior_frames
from fxpath.frontend.export import trace_export
from fxpath.ops.resample import apply_axes, axis_matrices

F64 = torch.float64


@pytest.fixture(scope="module")
def unet() -> tuple[cases.Case, fxpath.PathProgram]:
    case = cases.tiny_unet()
    return case, fxpath.compile(case.module, case.input_shape, dtype=F64)


def test_tiny_unet_shape_of_the_network(unet) -> None:
    case, prog = unet
    ops = {n.op for n in prog.graph}
    assert {"resample", "pool", "concat"} <= ops
    assert any(n.op == "linear" and n.attrs["kind"] == "conv_transpose" and "bn" in n.attrs
               for n in prog.graph)
    assert prog.output_names == ("0", "1")
    assert_same_function(prog.graph, case.module, case.input_shape)


@pytest.mark.parametrize("q", [1.0, 2.0, 0.5])
def test_tiny_unet_path_norm_is_the_enumeration(unet, q: float) -> None:
    case, prog = unet
    paths = oracle.path_lifting(case.build(case.module))
    assert len(paths) > 10_000
    assert prog.path_norm(q).value == pytest.approx(oracle.path_norm(paths, q), rel=1e-10)


def test_tiny_unet_scores_are_the_enumeration(unet) -> None:
    case, prog = unet
    dag = case.build(case.module)
    paths = oracle.path_lifting(dag)
    total = oracle.path_norm(paths, 1.0)
    scores = prog.path_magnitude()
    expected = oracle.mass_by_parameter(dag, paths)
    assert set(expected) == set(scores)
    for name, mass in expected.items():
        np.testing.assert_allclose(scores[name].numpy(), mass / total, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("kind", ["prune", "same_sign", "mixed_sign"])
def test_tiny_unet_metric_and_lipschitz_certificate(unet, kind: str) -> None:
    case, prog = unet
    for seed in range(3):
        if kind == "prune":
            twin = copy.deepcopy(case.module)
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for name, p in twin.named_parameters():
                    if name.endswith("weight") and p.dim() > 1:
                        p.mul_((torch.rand(p.shape, generator=gen, dtype=F64) > 0.4).to(F64))
        else:
            twin = perturbed(case.module, kind, seed)
        metric = prog.path_metric(twin)
        want = oracle.path_metric(case.build(case.module), case.build(twin))
        if kind == "prune":
            assert metric.exact and metric.value == pytest.approx(want, rel=1e-9)
        else:
            assert metric.value >= want * (1 - 1e-12)
        gen = torch.Generator().manual_seed(10 + seed)
        x = 4.0 * torch.randn((6, *case.input_shape), generator=gen, dtype=F64)
        bound = fxpath.lipschitz_bound(case.module, twin, x)
        measured = (flat_outputs(case.module, x) - flat_outputs(twin, x)).abs().sum(1)
        assert bool((measured <= bound * (1 + 1e-9)).all())
        if kind == "same_sign":  # the theorem's own bound, from the enumeration
            scale = x.flatten(1).abs().amax(1).clamp(min=1.0)
            assert bool((measured <= scale * want * (1 + 1e-9)).all())


def test_tiny_unet_through_torch_export(unet) -> None:
    case, prog = unet
    ep = trace_export(case.module, [case.input_shape])
    exported = fxpath.compile(ep, dtype=F64)
    assert exported.output_names == prog.output_names
    assert exported.path_norm().value == pytest.approx(prog.path_norm().value, rel=1e-12)
    for name, s in prog.path_magnitude().items():
        torch.testing.assert_close(exported.path_magnitude()[name], s, rtol=1e-10, atol=0)


# -- a 3-d U-Net of standard layers ---------------------------------------------------------------
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class UNet3d(nn.Module):
    """Two levels down (max-pool), up by a transposed conv and by trilinear upsampling,
    skip concatenations, reflect padding, a main and a deep-supervision output."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1, self.enc2, self.mid = _block(1, 4), _block(4, 6), _block(6, 8)
        self.pool = nn.MaxPool3d(2)
        self.up2 = nn.ConvTranspose3d(8, 6, 2, stride=2)
        self.dec2 = _block(12, 6)
        self.up1 = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.dec1 = nn.Sequential(nn.ReflectionPad3d(1), nn.Conv3d(10, 4, 3), nn.ReLU())
        self.head = nn.Conv3d(4, 2, 1)
        self.deep = nn.Conv3d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        m = self.mid(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return {"seg": self.head(d1), "deep": self.deep(d2)}


def test_unet_3d() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(UNet3d())
    prog = dense_checks(model, (1, 8, 8, 8))
    assert prog.output_names == ("seg", "deep")
    assert any(n.op == "resample" and n.attrs["mode"] == "trilinear" for n in prog.graph)


# -- constant interiors through interpolation ----------------------------------------------------
@pytest.mark.parametrize("mode, size, scale", [
    ("nearest", (8, 16), 2.0), ("bilinear", (12, 17), None), ("bicubic", (16, 16), 2.0),
    ("nearest-exact", (6, 5), None)])
def test_frames_of_interpolation_are_exact(mode: str, size: tuple[int, int],
                                           scale: float | None) -> None:
    """What the frame rule claims about a resample node holds on the path network's values:
    an input constant inside its frame gives an output constant inside the output frame."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1)
    up = builders.Interpolate(size=None if scale else size, scale_factor=scale, mode=mode,
                        **({} if mode.startswith("nearest") else {"align_corners": False}))
    net = nn.Sequential(conv, nn.ReLU(), conv.__class__(2, 2, 3, padding=1), up).double().eval()
    prog = fxpath.compile(net, (1, 8, 8), dtype=F64)
    frames = interior_frames(prog.graph)
    node = next(n for n in prog.graph if n.op == "resample")
    (flo, fhi), (glo, ghi) = frames[node.inputs[0]]
    x = torch.rand(1, 2, 8, 8, dtype=F64)
    x[:, :, flo:8 - fhi, glo:8 - ghi] = 0.7  # constant interior, random frame
    mats = axis_matrices(node.attrs["mode"], (8, 8), tuple(node.shape[1:]),
                         node.attrs["align_corners"], node.attrs["scales"], False)
    y = apply_axes(x, [m.abs() for m in mats])
    (alo, ahi), (blo, bhi) = frames[node.name]
    inner = y[:, :, alo:y.shape[2] - ahi, blo:y.shape[3] - bhi]
    assert inner.numel() > 0
    torch.testing.assert_close(inner, inner[:, :, :1, :1].expand_as(inner), rtol=1e-12, atol=0)
    dense = fxpath.compile(net, (1, 8, 8), dtype=F64, interior=False)
    assert prog.path_norm().value == pytest.approx(dense.path_norm().value, rel=1e-12)


def test_compressed_convs_after_upsampling_give_the_same_numbers() -> None:
    """A decoder conv reading an upsampled map runs on its compressed image (the frame rule
    of ``resample``): same norms and scores as the dense convs."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                        nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                        nn.Upsample(scale_factor=2, mode="bilinear"),
                        nn.Conv2d(4, 2, 3, padding=1)).double().eval()
    shape = (3, 24, 24)
    prog = fxpath.compile(net, shape, dtype=F64, interior=True)
    assert sum(n.op == "frame_conv" for n in prog.graph) == 3
    dense = fxpath.compile(net, shape, dtype=F64, interior=False)
    for q in (1.0, 2.0):
        assert prog.path_norm(q).value == pytest.approx(dense.path_norm(q).value, rel=1e-12)
    want = dense.path_magnitude()
    for k, v in prog.path_magnitude().items():
        torch.testing.assert_close(v, want[k], rtol=1e-10, atol=1e-300)
