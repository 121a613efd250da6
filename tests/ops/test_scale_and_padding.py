"""Model tensors in arithmetic (the ``scale`` op), weights computed from parameters at run
time (derived coordinates) and constant padding with a value.

Brute-force agreement is in the factories ``learnable_affine_net``, ``derived_weights_net``
and ``padded_net`` (`bruteforce.cases.ALL_FACTORIES`: path-norms, scores, metric, export); here: the
refusals, the conventions, and the timm families that needed them.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import assert_same_function

import fxpath
from fxpath.apps.rescale import rescale


class _Pad(nn.Module):
    def __init__(self, pad: tuple[int, ...], value: float, then: nn.Module) -> None:
        super().__init__()
        self.conv, self.pad, self.value, self.then = nn.Conv2d(2, 2, 3, padding=1), pad, value, then

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.then(F.pad(torch.relu(self.conv(x)), self.pad, value=self.value)).flatten(1)


@pytest.mark.parametrize("value, then, reason", [
    (-math.inf, nn.Conv2d(2, 2, 3), "padding with -inf feeds linear"),
    (-math.inf, nn.MaxPool2d(2, stride=1), "whose windows hold only padding"),
    (math.inf, nn.MaxPool2d(2), "needs a finite number"),
    (math.nan, nn.Conv2d(2, 2, 3), "needs a finite number"),
])
def test_padding_values_that_are_not_exact_are_refused(value: float, then: nn.Module,
                                                       reason: str) -> None:
    pad = (0, 2, 0, 2) if isinstance(then, nn.MaxPool2d) and value == -math.inf else (1, 1, 1, 1)
    with pytest.raises(fxpath.UnsupportedModelError, match=reason):
        fxpath.compile(_Pad(pad, value, then).eval(), (2, 6, 6))


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)
        self.register_buffer("offset", torch.randn(4, 1, 1))
        self.register_buffer("scratch", torch.ones(4, 1, 1), persistent=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x)) * self.gamma.view(1, -1, 1, 1) + self.offset
        return self.fc(y.mean((2, 3)))


def test_parameters_and_buffers_viewed_into_arithmetic_are_coordinates() -> None:
    model = _Scaled().double().eval()
    prog = fxpath.compile(model, (3, 6, 6), dtype=torch.float64)
    scale = [n for n in prog.graph if n.op == "scale"]
    assert [dict(n.params) for n in scale] == [{"weight": "gamma"}, {"bias": "offset"}]
    assert scale[0].attrs["weight_view"] == (1, 4, 1, 1)
    assert_same_function(prog.graph, model, (3, 6, 6))
    scores = prog.path_magnitude()
    assert scores["gamma"].shape == (4,) and scores["offset"].shape == (4, 1, 1)
    # a gamma entry weights every position of its channel: its mass is the channel's
    mass = prog.path_magnitude(neurons=True)["conv"]
    torch.testing.assert_close(scores["gamma"], mass, rtol=1e-10, atol=1e-14)


def test_a_tensor_outside_the_state_dict_or_computed_is_refused() -> None:
    class Scratch(_Scaled):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((torch.relu(self.conv(x)) * self.scratch).mean((2, 3)))

    class Divided(_Scaled):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((torch.relu(self.conv(x)) / self.offset).mean((2, 3)))

    class FromInput(_Scaled):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.conv.weight * x.mean()  # a weight that depends on the input
            return self.fc(torch.relu(F.conv2d(x, w, padding=1)).mean((2, 3)))

    for cls, reason in ((Scratch, "not in the model's state dict"),
                        (Divided, "division by the model tensor offset"),
                        (FromInput, "computed from the model's input")):
        with pytest.raises(fxpath.UnsupportedModelError, match=reason):
            fxpath.compile(cls().eval(), (3, 6, 6))


def test_a_tensor_computed_from_parameters_is_a_derived_coordinate() -> None:
    class Computed(_Scaled):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc((torch.relu(self.conv(x)) * self.gamma.exp()[:, None, None])
                           .mean((2, 3)))

    model = Computed().double().eval()
    prog = fxpath.compile(model, (3, 6, 6), dtype=torch.float64)
    (node,) = [n for n in prog.graph if n.op == "scale"]
    (derived,) = node.attrs["derived"]
    assert derived.report == "gamma" and derived.inputs == ("gamma",)
    assert_same_function(prog.graph, model, (3, 6, 6))
    coords = prog.coordinates()
    torch.testing.assert_close(coords[f"{node.name}_weight"].reshape(-1), model.gamma.exp())
    with torch.no_grad():
        model.gamma.add_(1.0)  # live: the next call computes exp(gamma) again
    torch.testing.assert_close(prog.coordinates()[f"{node.name}_weight"].reshape(-1),
                               model.gamma.exp())
    assert prog.path_magnitude()["gamma"].shape == (4, 1, 1)


def test_derived_weights_are_not_pruned_nor_rescaled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).double().eval()
    torch.nn.utils.parametrizations.weight_norm(model[2])
    shape = (3, 4, 4)
    report = fxpath.prune(model, 0.5, shape)
    assert "2.weight" not in report.sparsity and "0.weight" in report.sparsity
    before = fxpath.path_norm(model, shape, dtype=torch.float64).log2
    twin = rescale(model, shape, factors=(0.25, 4.0), seed=0)
    assert fxpath.path_norm(twin, shape, dtype=torch.float64).log2 == pytest.approx(before,
                                                                                   rel=1e-12)


def test_nf_resnet_weight_standardized_convs() -> None:
    """timm's nf_resnet standardizes its conv weights at run time (ScaledStdConv2d)."""
    torch.manual_seed(0)
    model = timm.create_model("nf_resnet26", pretrained=False, num_classes=10).double().eval()
    shape = (3, 32, 32)
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    assert sum("derived" in n.attrs for n in prog.graph) > 20
    assert_same_function(prog.graph, model, shape, batch=2)
    scores = prog.path_magnitude()
    assert scores["stem.conv.weight"].shape == model.stem.conv.weight.shape
    twin = rescale(model, shape, factors=(0.25, 4.0), seed=1)
    assert fxpath.path_norm(twin, shape, dtype=torch.float64).log2 == pytest.approx(
        prog.path_norm().log2, rel=1e-10)


def test_hgnetv2_learnable_affine_blocks() -> None:
    """timm's hgnetv2 multiplies and shifts activations by learnable scalars."""
    torch.manual_seed(0)
    model = timm.create_model("hgnetv2_b0", pretrained=False, num_classes=10).double().eval()
    shape = (3, 32, 32)
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    assert sum(n.op == "scale" for n in prog.graph) > 10
    assert_same_function(prog.graph, model, shape, batch=2)
    twin = rescale(model, shape, factors=(0.25, 4.0), seed=1)
    assert fxpath.path_norm(twin, shape).log2 == pytest.approx(prog.path_norm().log2,
                                                                rel=1e-10)
