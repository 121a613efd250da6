"""The dense-prediction ops against brute-force path enumeration (float64, 1e-10).

Interpolation in every fixed-weight mode (nearest, nearest-exact, linear, bilinear, trilinear,
bicubic, area; align_corners both ways; by size or scale factor, integer or not, with and
without recompute_scale_factor), PixelShuffle / PixelUnshuffle, transposed convs (1-, 2-, 3-d,
with output_size, as functions), reflect / replicate / circular padding in 1-, 2- and 3-d, and
1-d / 3-d pools. The brute-force DAG (`tests/bruteforce/`) writes PyTorch's index rules out by
hand; each case first checks that DAG against the module itself, then fxpath's path-norms
(q = 1 and a scaled q), path-magnitude scores and reference interpreter against it, and the
torch.export front end against the torch.fx one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bruteforce import builders, cases, oracle
from conftest import assert_same_function

import fxpath
from fxpath.frontend.export import trace_export
from fxpath.frontend.lower import core

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
SHAPE = {1: (1, 5), 2: (1, 3, 4), 3: (1, 2, 2, 3)}


def _net(op: nn.Module, nd: int, seed: int = 0, head: bool = True) -> cases.Case:
    """conv (2 channels, bias) -> ReLU -> ``op`` -> 1x1 conv (unless not ``head``)."""
    def spec() -> builders.Spec:
        s = (builders.Spec(SHAPE[nd]).node("conv", CONV[nd](1, 2, 3, padding=1))
             .node("relu", nn.ReLU()).node("op", op))
        return s.node("head", CONV[nd](2 if head else 1, 1, 1)) if head else s
    return cases._make(spec, seed, torch.float64)


def check(case: cases.Case, qs: tuple[float, ...] = (1.0, 2.5), export: bool = False) -> None:
    """The brute-force DAG computes the module; fxpath's norms, scores and function are the
    DAG's (and, with ``export``, the exported program's norms are the module's)."""
    module, shape, build = case
    dag = build(module)
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        np.testing.assert_allclose(dag.forward(x), builders.module_output(module, x), rtol=1e-10,
                                   atol=1e-12)
    prog = fxpath.compile(module, shape, dtype=torch.float64)
    for q in qs:
        assert prog.path_norm(q).value == pytest.approx(oracle.path_norm_dp(dag, q), rel=1e-10)
    scores, total = prog.path_magnitude(), oracle.path_norm_dp(dag, 1.0)
    for name, mass in oracle.mass_by_parameter_dp(dag).items():
        np.testing.assert_allclose(scores[name].numpy(), mass / total, rtol=1e-9, atol=1e-15)
    assert_same_function(prog.graph, module, shape, batch=2)
    if export:
        ep = trace_export(module, [shape])
        for q in qs:
            assert fxpath.path_norm(ep, None, q).value == pytest.approx(
                prog.path_norm(q).value, rel=1e-10)


# -- interpolation ------------------------------------------------------------------------------
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}
#: how the output size is asked for: (size or scale_factor, recompute_scale_factor)
_SIZES = {
    "x2": ({"scale_factor": 2}, None),
    "x1.5": ({"scale_factor": 1.5}, None),
    "size": ({"size": (7, 5, 4)}, None),
    "down": ({"scale_factor": 0.6}, None),
    "recompute": ({"scale_factor": 1.7}, True),
    "kept": ({"scale_factor": 1.7}, False),
    "per_axis": ({"scale_factor": (1.5, 2.0, 0.8)}, None),
}


def _interp_cases() -> list[tuple[str, int, bool | None, str]]:
    cases = []
    for nd in (1, 2, 3):
        sizes = list(_SIZES) if nd == 2 else (["x1.5", "size"] if nd == 1 else
                                              ["x2", "down", "per_axis"])
        for mode in ("nearest", "nearest-exact"):
            cases += [(mode, nd, None, s) for s in sizes]
        for align in (False, True):
            cases += [(_LINEAR[nd], nd, align, s) for s in sizes]
            if nd == 2:
                cases += [("bicubic", 2, align, s) for s in sizes]
        # area: an adaptive mean, uneven windows for non-integer factors
        cases += [("area", nd, None, s) for s in sizes if s != "kept"]
    return cases


def _interpolate(mode: str, nd: int, align: bool | None, sizes: str) -> builders.Interpolate:
    how, recompute = _SIZES[sizes]
    kwargs = {k: (v[:nd] if isinstance(v, tuple) else v) for k, v in how.items()}
    kwargs = {**kwargs, "mode": mode}
    if align is not None:
        kwargs["align_corners"] = align
    if recompute is not None:
        kwargs["recompute_scale_factor"] = recompute
    return builders.Interpolate(**kwargs)


@pytest.mark.parametrize("mode, nd, align, sizes", _interp_cases(),
                         ids=lambda v: str(v).replace(" ", ""))
def test_interpolation_matches_bruteforce(mode: str, nd: int, align: bool | None,
                                          sizes: str) -> None:
    check(_net(_interpolate(mode, nd, align, sizes), nd),
          export=sizes in ("x1.5", "recompute", "per_axis") and mode in (
              "nearest", "bilinear", "trilinear", "area"))


@pytest.mark.parametrize("op, nd", [
    (nn.Upsample(scale_factor=2, mode="nearest"), 2),
    (nn.Upsample(size=(5, 9), mode="bicubic", align_corners=True), 2),
    (nn.Upsample(scale_factor=(1.5, 2.5), mode="nearest-exact"), 2),
    (nn.Upsample(scale_factor=1.7, mode="linear", recompute_scale_factor=True), 1),
    (nn.Upsample(scale_factor=(2, 1.5, 1), mode="trilinear", align_corners=True), 3),
    (nn.Upsample(scale_factor=0.5, mode="area"), 3),
    (nn.UpsamplingNearest2d(scale_factor=3), 2),
    (nn.UpsamplingNearest2d(size=(5, 7)), 2),
    (nn.UpsamplingBilinear2d(size=(6, 6)), 2),
    (nn.UpsamplingBilinear2d(scale_factor=1.5), 2),  # align_corners=True, like its docs say
], ids=["Upsample", "Upsample_bicubic", "Upsample_nearest_exact", "Upsample_linear_recompute",
        "Upsample_trilinear", "Upsample_area", "UpsamplingNearest2d",
        "UpsamplingNearest2d_size", "UpsamplingBilinear2d", "UpsamplingBilinear2d_x1.5"])
def test_upsample_modules_match_bruteforce(op: nn.Module, nd: int) -> None:
    check(_net(op, nd), export=True)


def _full_map(fn, shape: tuple[int, ...]) -> torch.Tensor:
    """The whole linear map of ``fn`` on one channel (its Jacobian), not per axis."""
    eye = torch.eye(int(np.prod(shape)), dtype=torch.float64).reshape(-1, 1, *shape)
    out = fn(eye)
    return out.reshape(out.shape[0], -1).t()


@pytest.mark.parametrize("mode, align, size", [
    ("bilinear", False, (3, 2)), ("bilinear", True, (9, 11)), ("bicubic", False, (2, 3)),
    ("bicubic", True, (10, 4)), ("lanczos", False, (3, 5))])
def test_antialiased_modes_match_their_full_map(mode: str, align: bool,
                                                size: tuple[int, int]) -> None:
    """Antialiased kernels (no hand-written reference): the path-norm of a 1x1 conv followed
    by the interpolation is ``|w|^q`` times the sum of ``|A|^q`` over PyTorch's whole 2-d map."""
    op = builders.Interpolate(size=size, mode=mode, align_corners=align, antialias=True)
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), op).double().eval()
    a = _full_map(op, (7, 8))
    w = float(net[0].weight.detach())
    prog = fxpath.compile(net, (1, 7, 8), dtype=torch.float64)
    for q in (1.0, 2.0):
        want = (abs(w) ** q * a.abs().pow(q).sum()) ** (1 / q)
        assert prog.path_norm(q).value == pytest.approx(float(want), rel=1e-10)
    assert_same_function(prog.graph, net, (1, 7, 8))


def test_bicubic_taps_on_one_input_are_one_edge() -> None:
    """At a border bicubic reads the first input for two taps: the edge weight is their sum
    (the matrix entry), so the path-norm is the sum of |entries|, not of |taps|."""
    op = builders.Interpolate(size=(1, 8), mode="bicubic", align_corners=True)
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), op).double().eval()
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    a = _full_map(op, (1, 4))
    assert bool((a < 0).any())
    got = fxpath.compile(net, (1, 1, 4), dtype=torch.float64).path_norm().value
    assert got == pytest.approx(float(a.abs().sum()), rel=1e-12)
    assert got > float(a.sum()) + 0.1  # the negative coefficients count with their magnitude


class _ThreeUpsamplings(nn.Module):
    """An ``nn.Upsample``, ``F.interpolate`` inside a submodule and at the model's top level."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.up = nn.Upsample(scale_factor=2, mode="bicubic")
        self.dec = builders.Interpolate(size=(5, 5), mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dec(self.up(self.conv(x)))
        return F.interpolate(y, scale_factor=1.5, mode="nearest-exact")


def test_a_mode_fxpath_cannot_describe_is_refused_by_name(monkeypatch) -> None:
    """Every refusal of an interpolation names its mode and where it sits (the module path,
    also for the functional form), in both front ends."""
    def fail(*args, **kwargs) -> None:
        raise ValueError("not separable")

    monkeypatch.setattr(core, "check_separable", fail)
    net = nn.Sequential(nn.Conv2d(1, 1, 1), builders.Interpolate(scale_factor=2, mode="bicubic"))
    with pytest.raises(fxpath.UnsupportedModelError,
                       match=r"interpolate \(mode 'bicubic'\) at 1: interpolation mode "
                             r"'bicubic': not separable"):
        fxpath.compile(net.eval(), (1, 4, 4))
    model = _ThreeUpsamplings().eval()
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(model, (1, 3, 3))
    assert [(op.op, op.where) for op in info.value.ops] == [
        ("Upsample (mode 'bicubic')", "up"), ("interpolate (mode 'bilinear')", "dec"),
        ("interpolate (mode 'nearest-exact')", "<model>")]
    assert all(op.reason.endswith(": not separable") for op in info.value.ops)
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(trace_export(model, [(1, 3, 3)]))
    ops = info.value.ops
    assert [op.op.split(" (")[1] for op in ops] == [
        "mode 'bicubic')", "mode 'bilinear')", "mode 'nearest-exact')"], ops
    assert [op.where for op in ops[:2]] == ["up", "dec"], ops  # the top-level one: its node


# -- pixel shuffles, transposed convs, padding, pools -------------------------------------------
@pytest.mark.parametrize("op, shape", [
    (nn.PixelShuffle(2), (8, 2, 3)), (nn.PixelUnshuffle(2), (2, 4, 6))],
    ids=["PixelShuffle", "PixelUnshuffle"])
def test_pixel_shuffles_match_bruteforce(op: nn.Module, shape: tuple[int, ...]) -> None:
    channels = op(torch.zeros(1, *shape)).shape[1]

    def spec() -> builders.Spec:
        return (builders.Spec(shape).node("conv", nn.Conv2d(shape[0], shape[0], 1)).node("op", op)
                .node("relu", nn.ReLU()).node("head", nn.Conv2d(channels, 2, 3, padding=1)))
    check(cases._make(spec, 0, torch.float64), export=True)


def test_pixel_shuffle_functions() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.pixel_unshuffle(F.pixel_shuffle(self.conv(x), 2), downscale_factor=2)

    net = Net().double().eval()
    prog = fxpath.compile(net, (4, 3, 3), dtype=torch.float64)
    assert_same_function(prog.graph, net, (4, 3, 3))
    # a re-indexing there and back: the norm of the conv alone
    alone = fxpath.compile(net.conv, (4, 3, 3), dtype=torch.float64)
    assert prog.path_norm().value == pytest.approx(alone.path_norm().value, rel=1e-12)


@pytest.mark.parametrize("nd, kw", [
    (1, {"stride": 2, "padding": 1, "output_padding": 1}),
    (2, {"stride": (2, 1), "padding": 1, "dilation": 2, "groups": 2}),
    (3, {"stride": 2}),
])
def test_transposed_convs_match_bruteforce(nd: int, kw: dict) -> None:
    op = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd](2, 2, 2, **kw)
    check(_net(op, nd))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_transposed_conv_with_output_size(nd: int) -> None:
    conv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd](
        2, 2, 3, stride=2, padding=1)
    size = [2 * s for s in SHAPE[nd][1:]]  # one more than the default output
    check(_net(builders.ConvTransposeTo(conv, size), nd), export=nd == 2)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_transposed_conv_functions(nd: int) -> None:
    op = builders.FunctionalConvTranspose(2, 2, (2,) * nd, stride=2, padding=1, output_padding=1)
    check(_net(op, nd), export=nd == 3)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_bruteforce(nd: int, mode: str) -> None:
    cls = {"reflect": (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d),
           "replicate": (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d),
           "circular": (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)}[mode][nd - 1]
    widths = (1, 2, 0, 1, 1, 0)[:2 * nd]
    check(_net(cls(widths), nd), export=mode != "circular" or nd == 2)


@pytest.mark.parametrize("op", [
    nn.MaxPool3d(2, stride=1, padding=1, dilation=(1, 1, 2)),
    nn.MaxPool3d((1, 2, 2), ceil_mode=True),
    nn.AvgPool3d(2, stride=1, padding=1, count_include_pad=False),
    nn.AvgPool3d((2, 2, 3), stride=2, padding=1, ceil_mode=True, divisor_override=5),
    nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True),
    nn.AvgPool1d(2, stride=1, padding=1),
], ids=["max3d", "max3d_ceil", "avg3d", "avg3d_override", "max1d", "avg1d"])
def test_pools_in_1d_and_3d_match_bruteforce(op: nn.Module) -> None:
    nd = 3 if "3d" in type(op).__name__ else 1
    if isinstance(op, nn.MaxPool3d) and op.dilation != 1:
        with pytest.raises(fxpath.UnsupportedModelError, match="dilat"):
            fxpath.compile(_net(op, nd).module, SHAPE[nd])
        return
    check(_net(op, nd))


@pytest.mark.parametrize("op, reference, nd", [
    (nn.AdaptiveAvgPool3d((1, 2, 2)), builders.Interpolate(size=(1, 2, 2), mode="area"), 3),
    (nn.AdaptiveAvgPool1d(3), builders.Interpolate(size=3, mode="area"), 1),
    (nn.AdaptiveMaxPool3d((1, 2, 2)), nn.MaxPool3d((2, 1, 2), stride=1), 3),
    (nn.AdaptiveMaxPool1d(4), nn.MaxPool1d(2, stride=1), 1),
], ids=["avg3d", "avg1d", "max3d", "max1d"])
def test_adaptive_pools_in_1d_and_3d_match_bruteforce(op: nn.Module, reference: nn.Module,
                                                      nd: int) -> None:
    """Adaptive pools with uneven windows, against the DAG of an op computing the same map
    (``area`` interpolation is PyTorch's adaptive mean; these max windows are regular): the
    DAG is checked against ``op``'s own model first."""
    ref = _net(reference, nd)
    module = _net(op, nd).module
    assert all(torch.equal(v, ref.module.state_dict()[k]) for k, v in module.state_dict().items())
    check(cases.Case(module, ref.input_shape, lambda _: ref.build(ref.module)), export=nd == 3)


class _Unpool(nn.Module):
    """conv -> max-pool with indices -> max-unpool, as modules or as functions."""

    def __init__(self, nd: int, functional: bool) -> None:
        super().__init__()
        self.nd, self.functional = nd, functional
        self.conv = CONV[nd](1, 2, 3, padding=1)
        self.pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1](2, return_indices=True)
        self.unpool = (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)[nd - 1](2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.functional:
            pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[self.nd - 1]
            unpool = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[self.nd - 1]
            y, idx = pool(self.conv(x), 2, return_indices=True)
            return unpool(y, idx, 2)
        y, idx = self.pool(self.conv(x))
        return self.unpool(y, idx)


UNPOOL_REASON = "routes values by the argmax of an earlier max-pool"


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_max_unpool_is_refused_with_the_reason(nd: int, functional: bool) -> None:
    shape = (1, *(4,) * nd)
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(_Unpool(nd, functional).eval(), shape)
    found = {(op.op, op.where): op.reason for op in info.value.ops}
    unpool = (f"max_unpool{nd}d", "<model>") if functional else (f"MaxUnpool{nd}d", "unpool")
    assert UNPOOL_REASON in found[unpool], found
    if not functional:
        assert any(where == "pool" for _, where in found)  # the pool's indices are refused too
    else:  # F.max_poolNd(..., return_indices=True) is named as such, not as a tuple value
        assert found[(f"max_pool{nd}d_with_indices", "<model>")] == \
            "max-pooling with return_indices is not supported"
    # the torch.export front end gives the same reason
    with pytest.raises(fxpath.UnsupportedModelError) as info:
        fxpath.compile(trace_export(_Unpool(nd, functional).eval(), [shape]))
    assert any(UNPOOL_REASON in op.reason for op in info.value.ops), info.value.ops
