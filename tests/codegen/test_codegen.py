"""The generated path network: readable, exact scale tracking, live parameters, gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from conftest import randomize_batchnorm, small_head

import fxpath
from fxpath.codegen.generate import tapped_nodes
from fxpath.program import PathProgram


class DeepResidual(torch.nn.Module):
    """h <- h + relu(W_k h), ``depth`` times, then a linear read-out: far beyond float64."""

    def __init__(self, depth: int, width: int) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False)
                                          for _ in range(depth))
        self.head = torch.nn.Linear(width, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = h + torch.relu(block(h))
        return self.head(h)


def _log10_layer_by_layer(model: DeepResidual, width: int) -> float:
    """Independent float64 evaluation of the path network with explicit log-space scaling."""
    h = torch.ones(width, dtype=torch.float64)
    log10_scale = 0.0
    for block in model.blocks:
        h = h + block.weight.detach().double().abs() @ h
        top = h.max()
        h, log10_scale = h / top, log10_scale + math.log10(top.item())
    return math.log10((model.head.weight.detach().double().abs() @ h).sum().item()) + log10_scale


def test_generated_code_is_readable() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()
    prog = fxpath.compile(model, (3, 32, 32), interior=False)
    code = prog.path_network(1.0).code
    assert "def forward(self, conv1_weight, conv1_bias" in code
    assert "torch.conv2d(x_ones, conv1_weight" in code
    framed = fxpath.compile(model, (3, 32, 32), interior=True).path_network(1.0).code
    # the input is all ones: its frame is empty, the stem runs on a compressed image (rows
    # 0-5 and 26-31 of each axis, as runs (start, length, times)) and stores rows 0-2 and 5
    # of its 6-row output: two frame rows, one interior row, one frame row
    assert ("compact_conv(x_ones, conv1_weight, (2, 2), (3, 3), (1, 1), 1, "
            "(((0, 6, 1), (26, 6, 1)), ((0, 6, 1), (26, 6, 1))), "
            "(((0, 3, 1), (5, 1, 1)), ((0, 3, 1), (5, 1, 1))))" in framed)
    assert "relu" not in code  # ReLUs are identities in the path network
    assert "window_sum" in code  # the max-pool is a windowed sum
    assert len(code.splitlines()) < 400


@pytest.mark.parametrize("dtype", [torch.float32,
                                   pytest.param(torch.float64, marks=pytest.mark.slow)])
def test_beyond_float64_deep_residual(dtype: torch.dtype) -> None:
    depth, width = 1000, 8
    torch.manual_seed(0)
    model = DeepResidual(depth, width).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.weight.fill_(1.0)
        model.head.weight.fill_(1.0)
    pn = fxpath.path_norm(model, (width,), dtype=dtype)
    closed_form = math.log10(width) + depth * math.log10(1 + width)  # ones: (I + J) ** depth
    assert closed_form > 308  # beyond float64
    assert pn.value == math.inf and math.isfinite(pn.log10)
    assert pn.log10 == pytest.approx(closed_form, rel=1e-5)
    torch.manual_seed(1)
    random = DeepResidual(depth, width).eval()
    expected = _log10_layer_by_layer(random, width)
    assert fxpath.path_norm(random, (width,), dtype=dtype).log10 == pytest.approx(expected,
                                                                                  rel=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50",
                                  pytest.param("resnet152", marks=pytest.mark.slow)])
def test_float32_agrees_with_float64(arch: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)().eval()
    shape = (3, 224, 224)
    a = fxpath.compile(model, shape, dtype=torch.float32)
    b = fxpath.compile(model, shape, dtype=torch.float64)
    for q in (1.0, 2.0):
        assert a.path_norm(q).log10 == pytest.approx(b.path_norm(q).log10, rel=1e-5)
        assert a.path_norm(q).value == pytest.approx(b.path_norm(q).value, rel=1e-5)
    if arch == "resnet152":
        assert b.path_norm(1).value > 1e200


def test_live_parameters_and_gradients() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    prog = fxpath.compile(model, (3, 32, 32))
    before = prog.path_norm().log10
    assert prog.path_norm().log10 == before  # cached magnitudes
    pn = prog.path_norm(differentiable=True)
    pn.log_tensor.backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    with torch.no_grad():  # an optimizer step in place: the same program sees it
        for p in model.parameters():
            p.mul_(1.1)
    after = prog.path_norm().log10
    assert after != before
    assert after == pytest.approx(fxpath.path_norm(model, (3, 32, 32)).log10, rel=1e-6)
    assert math.exp(pn.log_tensor.item()) == pytest.approx(10 ** before, rel=1e-5)


@pytest.mark.slow
def test_torch_compile_option_gives_the_same_norm_and_scores() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 7 * 7, 4)).eval()
    prog = fxpath.compile(model, (3, 16, 16), torch_compile=True)
    assert prog.path_norm().value == pytest.approx(fxpath.path_norm(model, (3, 16, 16)).value,
                                                   rel=1e-6)
    scores = prog.path_magnitude()  # the tapped score network, compiled, with its backward
    for name, s in fxpath.path_magnitude(model, (3, 16, 16)).items():
        torch.testing.assert_close(scores[name], s, rtol=1e-5, atol=1e-9)


def test_compile_is_the_deprecated_name_of_torch_compile() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert PathProgram(model, (3,), torch_compile=True).runner.use_compile
    with pytest.warns(DeprecationWarning, match=r"PathProgram\(compile=...\).*torch_compile"):
        old = PathProgram(model, (3,), compile=True)
    assert old.runner.use_compile
    with pytest.warns(DeprecationWarning):
        assert not PathProgram(model, (3,), compile=False).runner.use_compile
    assert not fxpath.compile(model, (3,)).runner.use_compile


@pytest.mark.parametrize("kind", ["norm", "diff", "taps"])
def test_path_networks_never_read_values_on_the_host(kind: str) -> None:
    """Every path network (and the score backward) runs on the meta device, where any host
    read of a value (``.item()``, ``bool()``, data-dependent shapes) raises: nothing in them
    forces a device-to-host sync on a GPU."""
    model = small_head(torchvision.models.vgg11()).eval()  # convs, max-pools and dense taps
    prog = fxpath.compile(model, (3, 32, 32))
    mags = [torch.empty_like(m, device="meta") for m in prog.magnitudes_detached()]
    if kind == "diff":
        net = prog.path_network(1.0, mode="diff").to("meta")
        _, delta, exp = net(*(t for m in mags for t in (m, m)))
        assert delta.device.type == "meta" and exp.device.type == "meta"
        return
    leaves = [m.requires_grad_() for m in mags]
    taps = [torch.zeros((1, *n.shape), device="meta", requires_grad=True)
            for n in tapped_nodes(prog.graph)]
    net = prog.path_network(1.0, taps=kind == "taps").to("meta")
    total, exp, *rest = net(*leaves, *(taps if kind == "taps" else []))
    grads = torch.autograd.grad(total, leaves + taps, allow_unused=True)
    assert total.device.type == "meta" and exp.device.type == "meta"
    assert all(g is None or g.device.type == "meta" for g in grads)
    assert len(rest) == (1 if kind == "taps" else 0)


class _Mixed(torch.nn.Module):
    """Dilated grouped strided convs, uneven average pools, a concat and a 3-D conv."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 5, stride=2, padding=3, dilation=2, groups=2)
        self.pool = torch.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.c3 = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2 * 16 * 15 * 15, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        c = torch.cat([self.pool(a)[:, :, : b.shape[2], : b.shape[3]], b], 1)
        return self.fc(torch.flatten(torch.relu(self.c3(c.unsqueeze(1))), 1))


@pytest.mark.parametrize("name,shape", [
    ("resnet18", (3, 64, 64)), pytest.param("vgg11_bn", (3, 64, 64), marks=pytest.mark.slow),
    ("mobilenet_v2", (3, 64, 64)),
    pytest.param("densenet121", (3, 64, 64), marks=pytest.mark.slow), ("mixed", (3, 32, 32)),
])
def test_interior_option_gives_the_same_norms_scores_and_metric(name: str,
                                                                shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    if name == "mixed":
        model = _Mixed()
    elif name == "vgg11_bn":  # its features, with a small head (the 4096-wide one is slow)
        model = torch.nn.Sequential(torchvision.models.vgg11_bn().features, torch.nn.Flatten(),
                                    torch.nn.Linear(512 * 2 * 2, 10))
    else:
        model = getattr(torchvision.models, name)(num_classes=10)
    model = randomize_batchnorm(model).double().eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1 + 0.01 * torch.rand_like(p))
    dense = fxpath.compile(model, shape, dtype=torch.float64, interior=False)
    framed = fxpath.compile(model, shape, dtype=torch.float64, interior=True)
    assert "compact_conv" in framed.path_network(1.0).code
    assert "compact_conv" not in dense.path_network(1.0).code
    for q in (1.0, 2.0):
        assert framed.path_norm(q).log2 == pytest.approx(dense.path_norm(q).log2, rel=1e-13)
    want = dense.path_magnitude()
    got = framed.path_magnitude()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-10, atol=1e-300)
    assert framed.path_metric(other).log2 == pytest.approx(dense.path_metric(other).log2,
                                                           rel=1e-11)
    # neuron path mass sums input-side gradients over channels: exact with compressed convs
    want = dense.path_magnitude(neurons=True)
    for key, mass in framed.path_magnitude(neurons=True).items():
        torch.testing.assert_close(mass, want[key], rtol=1e-10, atol=1e-300)
    g_dense = torch.autograd.grad(dense.path_norm(differentiable=True).log_tensor,
                                  list(model.parameters()), allow_unused=True)
    g_framed = torch.autograd.grad(framed.path_norm(differentiable=True).log_tensor,
                                   list(model.parameters()), allow_unused=True)
    for a, b in zip(g_framed, g_dense):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-15)


def test_interior_default_per_device() -> None:
    """CPU: every conv the compression shrinks; other devices (checked on "meta", as a GPU
    would be): only convs of at least 5e8 multiply-adds, i.e. VGG's, not ResNet's."""
    vgg = torchvision.models.vgg16().eval()
    resnet = torchvision.models.resnet18().eval()

    def framed(model: torch.nn.Module, **kw: object) -> int:
        prog = fxpath.compile(model, (3, 224, 224), **kw)  # type: ignore[arg-type]
        return prog.path_network(1.0).code.count("fxpath_layout_compact_conv(")

    assert framed(vgg) == 10 and framed(resnet) > 5
    assert framed(vgg, device="meta") == 9  # conv1_1 (3 input channels) stays dense
    assert framed(resnet, device="meta") == 0
    assert framed(resnet, device="meta", interior=True) == framed(resnet)
    assert framed(vgg, interior=False) == 0
