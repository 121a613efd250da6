from __future__ import annotations

import pytest
import timm
import torch

from fxpath.errors import TraceError
from fxpath.frontend.lower.fx import has_rule
from fxpath.frontend.tracer import TRACE_BATCH, trace, where


class ShapeBranches(torch.nn.Module):
    """Control flow on shapes that plain symbolic tracing cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.shape[-1] < 7:
            x = torch.relu(x)
        return self.fc(x.view(x.size(0), -1))


def test_shapes_on_every_node_and_shape_control_flow() -> None:
    gm = trace(ShapeBranches().eval(), [(3, 8, 8)])
    ops = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert torch.relu in ops
    for n in gm.graph.nodes:
        if n.op not in ("output", "get_attr"):
            assert n.meta["val"].shape[0] == TRACE_BATCH
            assert n.meta["val"].device.type == "meta"
    fc = next(n for n in gm.graph.nodes if n.target == "fc")
    assert tuple(fc.meta["val"].shape) == (TRACE_BATCH, 5)


def test_value_dependent_control_flow_is_a_clear_error() -> None:
    class Bad(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(TraceError, match="branches on tensor values"):
        trace(Bad(), [(3,)])


def test_timm_leaf_without_rule_is_traced_through() -> None:
    model = timm.create_model("vgg11", pretrained=False, num_classes=7, mlp_ratio=0.0625).eval()
    gm = trace(model, [(3, 64, 64)], has_rule=has_rule)
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    assert "pre_logits" not in targets  # ConvMlp (a timm notrace module) was inlined
    assert "pre_logits.fc1" in targets


def test_trace_error_names_the_module_and_the_source_line() -> None:
    class Gate(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.mean() > 0:  # a branch on a value
                return x
            return -x

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.blocks = torch.nn.Sequential(torch.nn.ReLU(), Gate())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.blocks(self.conv(x))

    with pytest.raises(TraceError) as info:
        trace(Net().eval(), [(3, 4, 4)])
    text = str(info.value)
    assert "(at blocks.1, test_tracer.py:" in text
    assert "in forward `if x.mean() > 0:" in text
    assert info.value.__cause__ is not None


def test_bad_input_shape_is_a_trace_error() -> None:
    with pytest.raises(TraceError, match="invalid input shapes"):
        trace(torch.nn.Linear(3, 4), [(-3,)])


def test_where_never_raises() -> None:
    graph = torch.fx.Graph()
    node = graph.call_function(torch.relu, ())
    assert where(node) == "<model>"
    node.meta["nn_module_stack"] = ["not a dict"]  # it runs in error handlers: no exception
    assert where(node) == "<model>"
    node.meta["nn_module_stack"] = {"a": ()}
    assert where(node) == "<model>"
    node.meta["nn_module_stack"] = {"a": ("layer1.0", torch.nn.Module)}
    assert where(node) == "layer1.0"
