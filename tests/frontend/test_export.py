"""The torch.export front end: ATen graphs lower to the IR the torch.fx front end makes.

Every model is exported once (`trace_export`) and lowered twice: as exported and after
``ep.run_decompositions()``. The normalized IR must give the fx front end's l^1 and l^2
path-norms (float64, rel 1e-12) and path-magnitude scores under the same state_dict names;
where the graphs are one network (equal up to node names) that is checked too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from bruteforce import cases
from conftest import randomize_batchnorm
from fxpath.passes.frame_convs import frame_convs
from fxpath.passes.pipeline import normalize

import fxpath
from fxpath import UnsupportedModelError
from fxpath.codegen.generate import generate
from fxpath.codegen.lift import lift, slots, split_power
from fxpath.engine.architecture import graph_difference
from fxpath.errors import ArgumentError
from fxpath.frontend.export import lower_exported, trace_export
from fxpath.frontend.refusals import DATA_NORM, NOT_HOMOGENEOUS, PRODUCT
from fxpath.ir.graph import Graph
from fxpath.ir.params import ParamSource
from fxpath.quantities.results import log2_of


# -- path quantities of an IR, without a PathProgram ------------------------------------------
def ir_quantities(graph: Graph, model: nn.Module) -> tuple[float, float, dict[str, torch.Tensor]]:
    """``(log2 ||Phi||_1, log2 ||Phi||_2, path-magnitude scores by state_dict name)`` of a
    normalized IR with the live parameters of ``model``, in float64."""
    source = ParamSource(model, graph.param_names(), derived=graph.derived())

    def fetch(name: str) -> torch.Tensor:
        return source.fetch(name, torch.float64, torch.device("cpu"))

    graph = frame_convs(graph)  # the compressed-image convs, as a CPU program has them
    order = slots(graph)
    with torch.no_grad():
        net1 = generate(graph, order, q=1.0).to(torch.float64)
        mags = list(lift(graph, fetch, order, q=1.0).values())
        total, exp = net1(*mags)
        l1 = log2_of(float(total), float(exp))
        net2 = generate(graph, order, q=2.0, scaled=True).to(torch.float64)
        mantissas, exponents = split_power(lift(graph, fetch, order), 2.0)
        total2, exp2 = net2(*mantissas, *exponents)
        l2 = log2_of(float(total2), float(exp2)) / 2.0
    leaves = [m.detach().requires_grad_(True) for m in mags]
    total, _ = net1(*leaves)
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    scores = {}
    derived = graph.derived()  # reported under the parameter they stand for
    for slot, a, g in zip(order, leaves, grads):
        if slot.param is not None:  # s_i / ||Phi||_1 = a * d total / d a / total
            frac = torch.zeros_like(a) if g is None else (g * a / total).detach()
            key = derived[slot.param].report if slot.param in derived else slot.param
            scores[key] = frac.reshape(source.shape_of(slot.param))
    return l1, l2, scores


# -- models -----------------------------------------------------------------------------------
class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.bn(self.conv(x)))), 1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        y = self.bn1(self.conv1(x)).relu_()
        y = torch.add(self.conv2(y), x, alpha=0.5)  # residual add with alpha
        y += x
        y = (2 * y.relu() - 1) / 4 + (-y)
        return self.fc(y.mean((2, 3)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(5 * 5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([F.relu(self.a(x)), self.b(x)], dim=1)  # 6 channels
        p, q, r = torch.split(y, [2, 3, 1], dim=1)
        z = torch.cat([q[:, 1:], p, r[:, 0].unsqueeze(1), y[:, ::5]], 1)  # a strided slice
        z = z.permute(0, 2, 3, 1).transpose(1, 2).contiguous().permute(0, 3, 2, 1)
        return self.fc(z.sum(1).flatten(1))


class Activations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu6 = nn.ReLU6()
        self.leaky = nn.LeakyReLU(0.2)
        self.prelu = nn.PReLU(4)
        self.prelu1 = nn.PReLU()
        self.hardtanh = nn.Hardtanh(-1.0, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.relu6(y) + self.leaky(y) - self.hardtanh(y)
        y = self.prelu1(self.prelu(y))
        return F.relu6(y).clamp(min=0) + y.clamp(-0.5, 1.0)


class Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.avg = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.max = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
        self.avg_div = nn.AvgPool2d(2, divisor_override=3)
        self.adapt = nn.AdaptiveAvgPool2d((2, 3))
        self.adapt_max = nn.AdaptiveMaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        a = self.adapt(self.avg(y)) + self.adapt_max(self.max(y)).sum(3, keepdim=True)
        return torch.cat([a.flatten(1), self.avg_div(y).flatten(1), y.mean((1, 2))], 1)


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.up2 = nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.up2(F.relu(self.bn(self.up(x)))))


class Sequence1d(nn.Module):
    """1-d convs and pools, dense layers on (B, T, C) tokens (a contiguous and a transposed
    input: addmm on a folded batch, bmm + bias after decomposition), PReLU on tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, bias=False)
        self.pool = nn.MaxPool1d(2)
        self.avg = nn.AvgPool1d(2, ceil_mode=True)
        self.up = nn.ConvTranspose1d(4, 5, 2)
        self.fc = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 6)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.avg(self.pool(F.relu(self.conv(x)))))  # (B, 5, 3)
        t = self.fc(y.transpose(1, 2))  # (B, 3, 6): a transposed input
        t = self.prelu(self.fc2(F.relu(t)))  # contiguous
        return F.adaptive_avg_pool1d(t, 2)


class TwoInputs(nn.Module):
    """Two inputs, a dict of outputs, a no-op ``to``, dropout, chunk and unbind, constant
    padding."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.drop = nn.Dropout(0.3)
        self.conv = nn.Conv2d(2, 4, 3)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(img.dtype)  # export adds a run-time check of x's metadata: no neurons
        a, b = self.drop(F.relu(self.fc(x))).chunk(2, dim=2)
        u = torch.unbind(a, dim=1)
        w = F.relu(self.conv(F.pad(img, (1, 1, 2, 0))))
        return {"tokens": torch.cat([u[0], u[3]], 1), "sum": b.sum((1, 2)) - 3 * x.mean((1, 2)),
                "image": w.flatten(1)}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


#: name -> (model factory, input shape(s), IR equal to the fx one up to node names: as exported,
#: after run_decompositions (1-d pools decompose into 2-d ones, global pools into means...))
MODELS: dict[str, tuple[Callable[[], nn.Module], object, tuple[bool, bool]]] = {
    "mlp": (mlp, (8,), (True, True)),
    "conv_bn_relu_maxpool_linear": (ConvNet, (3, 8, 8), (True, True)),
    "residual": (Residual, (3, 6, 6), (True, True)),
    "concat": (Concat, (3, 5, 5), (True, True)),
    "activations": (Activations, (3, 6, 6), (True, True)),
    "pools": (Pools, (2, 7, 7), (True, False)),
    "conv_transpose": (Transposed, (3, 4, 4), (True, True)),
    "sequence_1d": (Sequence1d, (3, 12), (True, False)),
    "two_inputs": (TwoInputs, [(5, 6), (2, 5, 5)], (True, False)),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32), (True, False)),
    "learnable_affine": (lambda: cases.learnable_affine_net().module, (2, 4, 4), (True, True)),
    "constant_padding": (lambda: cases.padded_net().module, (2, 5, 5), (True, True)),
    "derived_weights": (lambda: cases.derived_weights_net().module, (2, 4, 4), (False, False)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_export_front_end_matches_fx(name: str) -> None:
    factory, shape, same_ir = MODELS[name]
    torch.manual_seed(0)
    model = randomize_batchnorm(factory()).double().eval()
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    l1, l2 = prog.path_norm(1.0).log2, prog.path_norm(2.0).log2
    scores = prog.path_magnitude()
    ep = trace_export(model, shape)
    for variant, program, same in (("exported", ep, same_ir[0]),
                                   ("decomposed", ep.run_decompositions(), same_ir[1])):
        graph = normalize(lower_exported(program), frame_min_macs=0)  # as a CPU program's
        got1, got2, got_scores = ir_quantities(graph, model)
        assert math.isclose(got1, l1, rel_tol=1e-12), (variant, got1, l1)
        assert math.isclose(got2, l2, rel_tol=1e-12), (variant, got2, l2)
        assert got_scores.keys() == scores.keys(), variant
        for key, s in scores.items():
            torch.testing.assert_close(got_scores[key], s, rtol=1e-9, atol=1e-14,
                                       msg=lambda m, k=key, v=variant: f"{v} {k}: {m}")
        if same:
            assert graph_difference(prog.graph, graph) is None, variant


def test_resnet_ir_is_the_fx_ir_with_module_path_names() -> None:
    model = torchvision.models.resnet18(num_classes=10).eval()
    raw = lower_exported(trace_export(model, (3, 32, 32)))
    conv = raw["layer1_0_conv1"]
    assert conv.op == "linear" and conv.params["weight"] == "layer1.0.conv1.weight"
    assert conv.attrs["stride"] == (1, 1) and conv.attrs["padding"] == (1, 1)
    assert raw["layer1_0_bn1"].attrs["bn"].running_var == "layer1.0.bn1.running_var"
    assert raw["layer1_0_relu_1"].op == "relu"  # the block's ReLU module, called twice
    assert raw["layer1_0_add"].attrs["coeffs"] == (1.0, 1.0)  # add_ in BasicBlock.forward
    assert raw.inputs[0].shape == (3, 32, 32) and raw["fc"].shape == (10,)
    assert raw.output.inputs == ("fc",)


def test_trace_export_runs_eval_mode_and_restores_training_flags() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(),
                          nn.Flatten(), nn.Linear(16, 2)).double()
    model.train()
    model[1].eval()
    flags = [m.training for m in model.modules()]
    ep = trace_export(model, (3, 4, 4))
    assert [m.training for m in model.modules()] == flags
    graph = normalize(lower_exported(ep))  # BatchNorm with running stats, Dropout off
    assert [n.op for n in graph] == ["input", "linear", "relu", "reshape", "linear", "output"]
    assert graph["_0"].attrs["bn"].running_mean == "1.running_mean"
    assert next(iter(ep.graph_signature.user_inputs)) in [n.name for n in graph.inputs]


class Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Conv2d(4, 4, 1))
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        y = y * torch.sigmoid(y.mean((2, 3), keepdim=True))  # squeeze-excitation gate
        return self.norm(y.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("decompose", [False, True])
def test_unsupported_ops_are_reported_with_module_paths(decompose: bool) -> None:
    ep = trace_export(Unsupported(), (3, 6, 6))
    ep = ep.run_decompositions() if decompose else ep
    raw = lower_exported(ep)
    with pytest.raises(UnsupportedModelError) as info:
        normalize(raw)
    ops = info.value.ops
    assert (ops[0].op, ops[0].where, ops[0].reason) == ("SiLU", "body.1", NOT_HOMOGENEOUS)
    assert [(op.op, op.reason) for op in ops[1:]] == [
        ("aten.sigmoid", NOT_HOMOGENEOUS), ("aten.mul", PRODUCT), ("LayerNorm", DATA_NORM)]
    assert ops[3].where == "norm"  # its decomposition's many ops: one entry
    silu = next(n for n in raw if n.op == "unsupported")
    assert silu.name == "body_1" and silu.inputs == ("body_0",) and silu.shape == (4, 4, 4)


def test_refusals_of_the_exported_graph() -> None:
    class InPlaceOnView(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x.view(x.shape[0], -1)
            v.relu_()  # writes into x, which is read again
            return x * 2 + v.sum(1, keepdim=True)[:, :, None]

    class InPlaceUnderView(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x * 1.0
            v = x.transpose(1, 2)
            x.relu_()  # changes v too
            return v

    for model in (InPlaceOnView(), InPlaceUnderView()):
        with pytest.raises(UnsupportedModelError, match="shares its memory"):
            normalize(lower_exported(trace_export(model, (2, 3))))
    class FloorDiv(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.div(x.relu(), 2, rounding_mode="floor")

    with pytest.raises(UnsupportedModelError, match="rounding_mode='floor' is not linear"):
        normalize(lower_exported(trace_export(FloorDiv(), (3,))))
    with pytest.raises(UnsupportedModelError, match="BatchNorm uses batch statistics"):
        bn = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2, track_running_stats=False))
        normalize(lower_exported(trace_export(bn, (1, 3, 3))))


def test_batch_size_and_arguments_are_checked() -> None:
    model = mlp().eval()
    with pytest.raises(ArgumentError, match="batch size of at least 2"):
        lower_exported(torch.export.export(model, (torch.zeros(1, 8),), strict=False))
    with pytest.raises(ArgumentError, match="dynamic batch"):
        batch = torch.export.Dim("batch", min=2)
        lower_exported(torch.export.export(model, (torch.zeros(3, 8),), strict=False,
                                           dynamic_shapes=({0: batch},)))
    with pytest.raises(ArgumentError, match="ExportedProgram"):
        lower_exported(model)  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="batch must be an int >= 2"):
        trace_export(model, (8,), batch=1)


class PaddingModes(nn.Module):
    """Reflect / replicate padded convs and a conv whose weight is a buffer (functional)."""

    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
        self.replicate = nn.Conv2d(3, 3, 3, padding=2, padding_mode="replicate")
        self.register_buffer("mix", torch.randn(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(torch.relu(self.replicate(self.reflect(x))), self.mix)


def test_padding_modes_as_exported_and_refused_after_decomposition() -> None:
    torch.manual_seed(0)
    model = PaddingModes().double().eval()
    prog = fxpath.compile(model, (2, 5, 5), dtype=torch.float64)
    ep = trace_export(model, (2, 5, 5))
    got1, got2, scores = ir_quantities(normalize(lower_exported(ep)), model)  # F.pad + conv
    assert math.isclose(got1, prog.path_norm(1.0).log2, rel_tol=1e-12)
    assert math.isclose(got2, prog.path_norm(2.0).log2, rel_tol=1e-12)
    assert scores.keys() == prog.path_magnitude().keys() == {
        "reflect.weight", "reflect.bias", "replicate.weight", "replicate.bias", "mix"}
    with pytest.raises(UnsupportedModelError) as info:  # decomposed: a gather (aten.index)
        normalize(lower_exported(ep.run_decompositions()))
    assert {(op.op, op.where) for op in info.value.ops} == {("Conv2d", "reflect"),
                                                            ("Conv2d", "replicate")}
    assert all("reflect or replicate padding" in op.reason for op in info.value.ops)
