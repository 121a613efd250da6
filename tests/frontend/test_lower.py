from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import assert_same_function, lowered
from fxpath.passes._rebuild import rebuild
from fxpath.passes.check_supported import check_supported
from fxpath.passes.pipeline import normalize

import fxpath
import fxpath.frontend.lower.fx_rules as lower_mod
from fxpath import UnsupportedModelError
from fxpath.ir.graph import Graph, Node


@pytest.mark.parametrize("name, first", [
    ("efficientnet_b0", "SiLU at bn1.act: not positively homogeneous"),
    ("convnext_atto", "layer_norm at stem.1: data-dependent normalization"),
    ("vit_tiny_patch16_224", "at <model>: mixes activations with a tensor computed from "
                             "parameters"),
])
def test_non_relu_dag_models_are_refused_with_every_op(name: str, first: str) -> None:
    model = timm.create_model(name, pretrained=False).eval()
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(model, (3, 224, 224))
    assert first in str(info.value)
    assert len(info.value.ops) > 5
    assert all(op.reason for op in info.value.ops)


def test_efficientnet_names_the_squeeze_excitation_product() -> None:
    model = timm.create_model("efficientnet_b0", pretrained=False).eval()
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(model, (3, 64, 64))
    text = str(info.value)
    assert "SiLU at blocks.0.0.bn1.act" in text
    assert "mul at blocks.0.0.se: product of two activations" in text


def test_weight_standardization_is_derived_and_training_bn_is_refused() -> None:
    class WS(torch.nn.Conv2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = (self.weight - self.weight.mean()) / self.weight.std()
            return torch.nn.functional.conv2d(x, w, self.bias)

    net = torch.nn.Sequential(WS(3, 4, 3), torch.nn.ReLU()).double().eval()
    prog = fxpath.compile(net, (3, 8, 8), dtype=torch.float64)
    (conv,) = [n for n in prog.graph if n.op in ("linear", "frame_conv")]
    assert conv.params["weight"] == "0.weight:derived"
    assert [d.inputs for d in conv.attrs["derived"]] == [("0.weight",)]
    assert_same_function(prog.graph, net, (3, 8, 8))
    # fxpath.compile analyses a train-mode model as its eval-mode function; the lowering
    # itself still refuses a BatchNorm that uses batch statistics
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    with pytest.raises(UnsupportedModelError, match="eval"):
        check_supported(lowered(bn, (3, 8, 8)))


# -- no raw exception escapes the lowering or the passes ------------------------------------------
def _refusal(model: nn.Module, shape: tuple[int, ...]) -> UnsupportedModelError:
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(model.eval(), shape)
    return info.value


def test_bat_resnext26ts_is_refused_listing_every_op() -> None:
    """Its BilinearAttnTransform concatenates ``torch.split``'s tuple: ``torch.cat`` received
    one fx node (the tuple) instead of a list, and its rule raised a raw TypeError iterating it.
    torch.fx traces the model fine (so no TraceError): it is refused for its non-ReLU-DAG ops.
    The split itself is supported, but here it splits a tensor with (batch * channels) first."""
    model = timm.create_model("bat_resnext26ts", pretrained=False).eval()
    info = _refusal(model, (3, 256, 256))
    text = str(info)
    assert "split at stages.0.0.attn.ba: mixes samples" in text
    assert "cat at stages.0.0.attn.ba: concatenates the tensors of split" in text
    assert "Tensor.matmul at stages.0.0.attn.ba: product of two activations" in text
    assert "SiLU at stem.conv1.bn.act" in text
    assert info.__cause__ is None  # every op was refused by a rule, none by a crash


class _Body(nn.Module):
    def __init__(self, forward: object, cin: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 4, 1)
        self.lin = nn.Linear(8, 8)
        self.pool1 = nn.AvgPool1d(2)
        self.fn = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)  # type: ignore[operator]


class _Net(nn.Module):
    """The op under test sits in ``body``: messages must say ``at body``."""

    def __init__(self, forward: object, cin: int = 4) -> None:
        super().__init__()
        self.body = _Body(forward, cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.mark.parametrize("forward, shape, expected", [
    (lambda m, x: torch.cat(torch.split(m.conv(x), 1, dim=0), dim=3), (4, 6, 6),
     ["split at body: split along the batch dimension (dim=0)",
      "cat at body: concatenates the tensors of split = split(...) at body"]),
    (lambda m, x: m.conv(x) / 0, (4, 6, 6), ["truediv at body: division by zero"]),
    (lambda m, x: m.pool1(m.lin(x)), (8,),
     ["AvgPool1d at body.pool1: 1-d pooling of a 1-d tensor: without a channel dimension"]),
    (lambda m, x: F.max_pool2d(m.lin(x), 2), (8, 8),
     ["max_pool2d at body: 2-d pooling of a 2-d tensor"]),
    (lambda m, x: F.adaptive_avg_pool2d(m.lin(x), 2), (8, 8),
     ["adaptive_avg_pool2d at body: 2-d pooling of a 2-d tensor"]),
])
def test_escapes_are_refused_naming_op_and_module(forward: object, shape: tuple[int, ...],
                                                  expected: list[str]) -> None:
    """Each forward used to raise a raw TypeError / ZeroDivisionError / KeyError (a 1-d pool
    of a tensor without channels) or, for 2-d pools without channels, lowered silently wrong."""
    text = str(_refusal(_Net(forward), shape))
    for line in expected:
        assert line in text


@pytest.mark.parametrize("forward", [
    lambda m, x: torch.cat(torch.split(m.conv(x), 1, dim=1), dim=3),
    lambda m, x: torch.cat(m.conv(x).chunk(2, 1), 1),
])
def test_cat_of_a_split_tuple_is_lowered(forward: object) -> None:
    """``torch.cat`` of a split/chunk's whole tuple used to be refused (ops returning several
    tensors were not lowered): each piece is now a slice of the input, concatenated."""
    net = _Net(forward).double().eval()
    shape = (4, 6, 6)
    assert_same_function(fxpath.compile(net, shape, dtype=torch.float64).graph, net, shape)


def test_output_not_computed_from_the_input_is_refused() -> None:
    """Used to compile, then fail with a raw IndexError when the path network ran."""
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.w * 2

    assert "model output at <model>: no output of the model is computed from its input" in \
        str(_refusal(Constant(), (3,)))


@pytest.mark.parametrize("forward, shape", [
    (lambda m, x: torch.add(m.conv(x), other=torch.relu(m.conv(x))), (4, 6, 6)),
    (lambda m, x: torch.add(input=m.conv(x), other=1.0), (4, 6, 6)),
    (lambda m, x: torch.relu(m.conv(input=x)), (4, 6, 6)),
    (lambda m, x: F.linear(input=x, weight=m.lin.weight, bias=m.lin.bias), (8,)),
    (lambda m, x: torch.mean(input=m.conv(x), dim=(2, 3)), (4, 6, 6)),
    (lambda m, x: torch.flatten(input=m.conv(x), start_dim=1), (4, 6, 6)),
    (lambda m, x: torch.clamp(input=m.conv(x), min=0.0), (4, 6, 6)),
    (lambda m, x: F.max_pool2d(input=m.conv(x), kernel_size=2), (4, 6, 6)),
])
def test_keyword_arguments_are_lowered(forward: object, shape: tuple[int, ...]) -> None:
    """``input=`` / ``other=`` keywords used to reach the rules as unknown keywords (a raw
    TypeError; IndexError for a module called as ``m(input=x)``): the same calls, lowered."""
    net = _Net(forward).double().eval()
    assert_same_function(fxpath.compile(net, shape, dtype=torch.float64).graph, net, shape)


def test_a_failing_rule_becomes_an_unsupported_op_with_its_cause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception inside a rule: the op is listed with the others, the exception chained."""
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(lower_mod.RULES, torch.relu, broken)
    info = _refusal(_Net(lambda m, x: torch.sigmoid(torch.relu(m.conv(x)))), (4, 6, 6))
    text = str(info)
    assert "relu at body: fxpath cannot lower this call (RuntimeError: boom)" in text
    assert "sigmoid at body: not positively homogeneous" in text  # still every op listed
    assert isinstance(info.__cause__, RuntimeError)


def test_a_failing_pass_names_the_node_with_its_cause() -> None:
    graph = lowered(_Net(lambda m, x: F.avg_pool2d(m.conv(x), 2)).eval(), (4, 6, 6))

    def broken(node: Node) -> list[Node]:
        if node.op == "avgpool":
            raise ValueError("bad window")
        return [node]

    with pytest.raises(UnsupportedModelError) as info:
        rebuild(graph, broken)
    assert "avg_pool2d at body: fxpath cannot normalize this avgpool node (ValueError: bad " \
           "window)" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    no_output = Graph(tuple(n for n in graph if n.op != "output"))
    with pytest.raises(UnsupportedModelError, match="pass eliminate_dead_nodes") as info:
        normalize(no_output)
    assert isinstance(info.value.__cause__, StopIteration)
