"""An ExportedProgram (as exported and after run_decompositions) gives the module's numbers
through every public function: path-norms, scores, path-metric and the Lipschitz bound."""

from __future__ import annotations

import copy
import warnings

import pytest
import timm
import torch
import torch.nn as nn
from conftest import randomize_batchnorm

import fxpath
from fxpath.frontend.export import trace_export

TIMM = {"resnet18": (3, 32, 32), "resnet50d": (3, 32, 32), "densenet121": (3, 32, 32),
        "vgg11_bn": (3, 32, 32), "mobilenetv2_100": (3, 32, 32), "inception_v3": (3, 75, 75)}


class _UpSplit(nn.Module):
    """Transposed convs and a split: down, split in two, one half up again, concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(2, 6, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.up = nn.ConvTranspose2d(3, 4, 2, stride=2)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.relu(self.bn(self.down(x))).split(3, dim=1)
        up = torch.relu(self.up(a))
        mid = nn.functional.max_pool2d(torch.relu(self.up(b)), 1)
        return self.head(torch.cat([up, mid], 1))


def _model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "up_split":
        model, shape = _UpSplit(), (2, 8, 8)
    else:
        kwargs = {"mlp_ratio": 0.0625} if name.startswith("vgg") else {}
        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
        shape = TIMM[name]
    return randomize_batchnorm(model).double().eval(), shape


def _twin(model: nn.Module) -> nn.Module:
    """``model`` with 30% of its conv/linear weights pruned (dominated: one metric pass)."""
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in twin.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = m.weight
                w.mul_((torch.rand(w.shape, generator=gen, dtype=w.dtype) > 0.3).to(w.dtype))
    return twin


def _close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-9)


#: the default tier runs resnet18 and the small network; `-m slow` (CI) runs the timm list
CASES = [pytest.param(n, marks=() if n == "resnet18" else pytest.mark.slow) for n in TIMM]


@pytest.mark.parametrize("name", [*CASES, "up_split"])
@pytest.mark.parametrize("decomposed", [False, True])
def test_exported_program_gives_the_module_numbers(name: str, decomposed: bool) -> None:
    model, shape = _model(name)
    ep = trace_export(model, [shape])
    if decomposed:
        ep = ep.run_decompositions()
    twin = _twin(model)
    fx_prog = fxpath.compile(model, shape)
    ep_prog = fxpath.compile(ep)  # the exported program's own input shape
    assert ep_prog.dtype == torch.float64 and ep_prog.input_shapes == [shape]
    for q in (1.0, 2.0):
        assert _close(ep_prog.path_norm(q).log2, fx_prog.path_norm(q).log2)
    want, got = fx_prog.path_magnitude(), ep_prog.path_magnitude()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-300)
    metric = fx_prog.path_metric(twin)
    assert metric.exact and _close(ep_prog.path_metric(twin).log2, metric.log2)
    x = torch.randn(3, *shape, dtype=torch.float64)
    want = x.flatten(1).abs().amax(1).clamp(min=1.0) * metric.value
    torch.testing.assert_close(fxpath.lipschitz_bound(ep, twin, x), want, rtol=1e-9, atol=0)


def test_exported_program_reads_its_parameters_live() -> None:
    model, shape = _model("up_split")
    ep = trace_export(model, [shape])
    prog = fxpath.compile(ep)
    before = prog.path_norm().log2
    with torch.no_grad():
        model.head.weight.data.mul_(2.0)  # the exported program holds the module's tensors
    assert prog.path_norm().log2 != before
    assert _close(prog.path_norm().log2, fxpath.path_norm(model, shape).log2)


def test_front_end_export_and_the_fx_fallback() -> None:
    model, shape = _model("up_split")
    via_export = fxpath.compile(model, shape, front_end="export")
    assert _close(via_export.path_norm(2).log2, fxpath.compile(model, shape).path_norm(2).log2)

    class Branchy(nn.Module):  # torch.fx cannot follow a branch on a value; export can
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.a(x))
            return y if bool(torch.jit.is_scripting()) else y * 1.0

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fxpath.compile(Branchy().eval(), (4,))  # fx succeeds: no warning
    with pytest.raises(fxpath.errors.ArgumentError, match="front_end"):
        fxpath.compile(model, shape, front_end="onnx")


def test_exported_program_is_refused_where_the_model_is_written() -> None:
    model, shape = _model("up_split")
    ep = trace_export(model, [shape])
    with pytest.raises(fxpath.errors.ArgumentError, match="writes to the model"):
        fxpath.prune(ep, 0.5, shape)
    with pytest.raises(fxpath.errors.ArgumentError, match="differs from the exported"):
        fxpath.compile(ep, (2, 9, 9))
    with pytest.raises(fxpath.errors.ArgumentError, match="input_shape is required"):
        fxpath.compile(model)
