"""The op registry (`fxpath.ops`): every op complete, the docs table current, the verifier's
schema checks, and proof that defining the ops in one place changed no path network."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from conftest import assert_same_function, lowered, randomize_batchnorm, small_head
from fxpath.passes.pipeline import PIPELINE, normalize

from fxpath import ops
from fxpath.errors import IRVerificationError
from fxpath.ir.graph import Graph, Node
from fxpath.ops.__main__ import main as write_docs
from fxpath.ops.core import op_of
from fxpath.ops.linear import LINEAR, LINEAR_OPS
from fxpath.ops.verify import check_ops, verify
from fxpath.ops.walk import BY_RULE, walk
from fxpath.program import PathProgram

DOCS = Path(__file__).resolve().parents[2] / "docs" / "ops.md"
FINAL = [op for op in ops.REGISTRY.values() if op.final]
PRE_NORM = [op for op in ops.REGISTRY.values() if not op.final]


# -- every op is complete -----------------------------------------------------------------------
def _has_rule(op: ops.Op, slot: str) -> bool:
    rule = getattr(op, slot)
    if isinstance(rule, ops.NotApplicable):
        return bool(rule.reason.strip())  # "does not apply, because ..."
    kind = {"rescale_rule": ops.Rescaling, "slots_rule": ops.Coordinates}.get(slot)
    if kind is not None:
        return isinstance(rule, kind) and bool(rule.summary)
    return callable(rule) and bool(ops.summary(rule))  # documented by its docstring


@pytest.mark.parametrize("op", FINAL, ids=lambda op: op.name)
def test_every_final_op_has_every_rule_or_says_why_not(op: ops.Op) -> None:
    missing = [slot for slot in ops.RULES if not _has_rule(op, slot)]
    assert not missing, f"op {op.name!r} lacks {missing} (give a rule or does_not_apply(reason))"
    # the code generator and the reference interpreter need a rule for every final op
    assert callable(op.path_rule) and callable(op.interpret_rule)


@pytest.mark.parametrize("op", FINAL, ids=lambda op: op.name)
def test_rescaling_rules_are_consistent(op: ops.Op) -> None:
    rule = op.rescale_rule
    if isinstance(rule, ops.Rescaling):
        assert (rule.absorbs is None) == (rule.divide is None), op.name
        assert (rule.produces is None) == (rule.scale is None), op.name


@pytest.mark.parametrize("op", PRE_NORM, ids=lambda op: op.name)
def test_every_pre_normalization_op_names_the_pass_that_removes_it(op: ops.Op) -> None:
    assert op.lowered_by in dict(PIPELINE), f"op {op.name!r}: lowered_by must name a pass"
    assert _has_rule(op, "interpret_rule")
    for slot in ("path_rule", "frame_rule", "rescale_rule", "slots_rule"):
        assert isinstance(getattr(op, slot), ops.NotApplicable), (op.name, slot)


def test_docs_table_is_generated_from_the_registry(tmp_path: Path) -> None:
    assert DOCS.read_text() == ops.markdown_table(), "docs/ops.md is stale: python -m fxpath.ops"
    assert write_docs([str(tmp_path / "ops.md")]) == 0
    assert (tmp_path / "ops.md").read_text() == ops.markdown_table()
    for name in ops.REGISTRY:
        assert f"| `{name}` |" in ops.markdown_table()


def test_registry_lookups_fail_clearly() -> None:
    with pytest.raises(IRVerificationError, match="unknown IR op 'softmax'.*registered: "):
        ops.get("softmax")
    with pytest.raises(ValueError, match="already registered"):
        ops.register(ops.get("relu"))
    node = Node("bn1", "batchnorm", ("x",), (3,))
    with pytest.raises(IRVerificationError, match="bn1 .*no path_rule .*fold_batchnorm"):
        ops.rule_of(node, "path_rule")
    assert ops.rule_of(node, "path_rule", None) is None
    with pytest.raises(IRVerificationError, match="s = softmax.*unknown IR op 'softmax'"):
        op_of(Node("s", "softmax", ("x",), (3,)))


# -- the one walk every driver runs -----------------------------------------------------------
def test_walk_feeds_inputs_and_names_the_node_it_fails_on() -> None:
    x = Node("x", "input", (), (3,))
    bn = Node("bn", "batchnorm", ("x",), (3,))
    g = Graph((x, Node("r", "relu", ("x",), (3,)), bn, Node("output", "output", ("bn",), ())))
    seen = walk(g, "interpret_rule", lambda rule, n, ins: [n.name, *ins])
    assert seen["output"] == ["output", ["bn", ["x"]]]
    fixed = walk(g, "path_rule", lambda rule, n, ins: n.name,
                 fixed=lambda n: "fixed" if n.name == "r" else BY_RULE,
                 otherwise=lambda n, why: why.reason)
    assert fixed == {"x": "x", "r": "fixed", "bn": "rewritten away by fold_batchnorm",
                     "output": "output"}
    with pytest.raises(IRVerificationError, match="bn = batchnorm.*no path_rule"):
        walk(g, "path_rule", lambda rule, n, ins: None)
    with pytest.raises(ZeroDivisionError) as failed:
        walk(g, "interpret_rule", lambda rule, n, ins: 1 / 0 if n.name == "r" else 0)
    assert any("r = relu" in note for note in getattr(failed.value, "__notes__", ["r = relu"]))
    with pytest.raises(IRVerificationError, match="r = relu.*'x' has no value.*topological"):
        walk(Graph((Node("r", "relu", ("x",), (3,)), x)), "interpret_rule",
             lambda rule, n, ins: 0)


def test_op_handles_are_the_registered_ops() -> None:
    assert op_of(Node("c", "linear", ("x",), (3,), {"kind": "dense"})) is LINEAR
    assert {op.name for op in LINEAR_OPS} == {"linear", "frame_conv"}
    for op in ops.REGISTRY.values():
        assert ops.get(op.name) is op


# -- the verifier checks every node against its op's schema -----------------------------------
def _graph(*nodes: Node) -> Graph:
    x = Node("x", "input", (), (3, 8, 8))
    return Graph((x, *nodes, Node("output", "output", (nodes[-1].name,), ())))


_CONV = {"kind": "conv", "ndim": 2, "kernel": (3, 3), "stride": (1, 1), "padding": (1, 1),
         "dilation": (1, 1), "groups": 1}


@pytest.mark.parametrize("node,message", [
    (Node("s", "softmax", ("x",), (3, 8, 8)), "s = softmax.*not registered in fxpath.ops"),
    (Node("c", "linear", ("x",), (4, 8, 8), {**_CONV, "groups": 1.5}, {"weight": "w"}),
     "c = linear.*attribute 'groups' = 1.5 is not int"),
    (Node("c", "linear", ("x",), (4, 8, 8), {k: v for k, v in _CONV.items() if k != "kernel"},
          {"weight": "w"}), "c = linear.*attribute 'kernel' is missing"),
    (Node("r", "relu", ("x",), (3, 8, 8), {"inplace": True}), "r = relu.*attribute 'inplace'"),
    (Node("r", "reshape", ("x",), (3, 64), {"fn": "flatten"}), "attribute 'fn' = 'flatten'"),
    (Node("m", "maxpool", ("x",), (3, 4, 4), {"ndim": 2, "kernel": (2, 2), "stride": (2, 2),
                                              "padding": (0, 0), "dilation": (1, 1),
                                              "ceil_mode": False}),
     "m = maxpool.*unknown to codegen.*lower_pooling"),
])
def test_verifier_names_the_node_and_the_attribute(node: Node, message: str) -> None:
    with pytest.raises(IRVerificationError, match=message):
        verify(_graph(node))


def test_conditional_attributes() -> None:
    dense = Node("fc", "linear", ("x",), (4,), {"kind": "dense"}, {"weight": "w"})
    verify(_graph(dense))  # dense layers carry no window attributes
    with pytest.raises(IRVerificationError, match="'output_padding' is missing"):
        verify(_graph(Node("t", "linear", ("x",), (4, 8, 8), {**_CONV, "kind": "conv_transpose"},
                           {"weight": "w"})))


# -- every op the lowering emits is registered, and every registered op is emitted --------------
class _EveryOp(nn.Module):
    """One model through which the lowering emits every op of the registry."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 3, 3, padding=1)  # zero padding on all-ones: a frame_conv
        self.conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(4)
        self.bn2 = nn.BatchNorm2d(4)
        self.prelu = nn.PReLU(4)
        self.drop = nn.Dropout()
        self.convt = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.fc = nn.Linear(2 * 2 * 9, 3)
        self.gamma = nn.Parameter(torch.rand(3) + 0.5)  # a learnable scale: scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.bn(self.conv(self.conv0(x) * self.gamma.view(1, -1, 1, 1)))
        y = F.relu6(y) + F.leaky_relu(y, 0.1) + self.bn2(F.relu(y))
        y = F.hardtanh(y, -1.0, 2.0) * 0.5 - y.clamp(min=0.5)
        y = self.prelu(self.drop(y))
        a, _ = torch.cat([F.max_pool2d(y, 2), F.avg_pool2d(y, 2)], 1).chunk(2, 1)
        y = F.interpolate(self.convt(a), scale_factor=1.5, mode="bilinear")
        z = torch.cat([F.adaptive_avg_pool2d(y, 2), F.adaptive_max_pool2d(y, 2)], 1)
        z = F.pad(z[:, :8].permute(0, 2, 3, 1), (0, 1))
        return self.fc(z.flatten(1)), y.mean((2, 3))


def test_every_op_the_lowering_emits_is_registered() -> None:
    """(`normalize` also checks every lowering output of the whole suite with `check_ops`.)"""
    torch.manual_seed(0)
    model = randomize_batchnorm(_EveryOp()).double().eval()
    graph = lowered(model, (3, 8, 8))
    check_ops(graph)
    assert_same_function(graph, model, (3, 8, 8))
    refused = lowered(nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid()), (3, 4, 4))
    emitted = {n.op for n in graph} | {n.op for n in refused}
    assert emitted == {op.name for op in PRE_NORM} | {"input", "linear", "relu", "add",
                                                      "concat", "reshape", "resample", "scale",
                                                      "output"}
    final: set[str] = set()
    for fold_bn in (True, False):
        normal = normalize(graph, fold_bn=fold_bn, frame_min_macs=0)
        assert_same_function(normal, model, (3, 8, 8))
        final |= {n.op for n in normal}
    # affine, pool and frame_conv come from the passes
    assert final == {op.name for op in FINAL}
    assert emitted | final == set(ops.REGISTRY)  # no registered op is never produced


# -- the refactor changed no path network -------------------------------------------------------
#: sha256 (first 16 hex digits) of ``path_network(...).code`` and of the network's buffers,
#: recorded before the op rules moved into `fxpath.ops` (the ``diff`` networks re-recorded when
#: the path-metric network moved to ``(lo, gap)`` arguments and a batched ``lo``/``delta`` pass;
#: all re-recorded when compressed convs started to keep their outputs compact,
#: `fxpath.layout`, and norm-mode convs to call `fxpath.kernels.grad_frame.conv` where it may pay)
NETWORKS = {
    ("resnet18", "norm_q1"): ("1149d9be2286b291", "50a32c0431f83f59"),
    ("resnet18", "norm_q2"): ("13927d9cdef7694e", "50a32c0431f83f59"),
    ("resnet18", "diff"): ("672ae70aea2c9314", "50a32c0431f83f59"),
    ("resnet18", "probes"): ("281cc4f0b6de6b6a", "50a32c0431f83f59"),
    ("resnet18", "taps"): ("f42a0d3757872cc6", "50a32c0431f83f59"),
    ("vgg11_bn", "norm_q1"): ("2973b9a8df8a7917", "70070026eeb511ef"),
    ("vgg11_bn", "norm_q2"): ("d6c8d6d738b15f7d", "70070026eeb511ef"),
    ("vgg11_bn", "diff"): ("fee39e6e0786c6bd", "70070026eeb511ef"),
    ("vgg11_bn", "probes"): ("728c91595f52451a", "70070026eeb511ef"),
    ("vgg11_bn", "taps"): ("8034bae06a66e360", "70070026eeb511ef"),
    ("densenet121", "norm_q1"): ("d77fc868ccbb98a7", "d38fbb910f5acb23"),
    ("densenet121", "norm_q2"): ("4f35550ef71fa47d", "435da9427412a4e7"),
    ("densenet121", "diff"): ("aa97dcc8266c9d4c", "d38fbb910f5acb23"),
    ("densenet121", "probes"): ("6185eed0de6b74af", "d38fbb910f5acb23"),
    ("densenet121", "taps"): ("0dc7cbbc476c9c1f", "d38fbb910f5acb23"),
    ("mobilenet_v2", "norm_q1"): ("2ec6fe694c50496f", "ae5c94b1427291a6"),
    ("mobilenet_v2", "norm_q2"): ("4494375c3209ca1a", "ae5c94b1427291a6"),
    ("mobilenet_v2", "diff"): ("f3e373b925d53060", "ae5c94b1427291a6"),
    ("mobilenet_v2", "probes"): ("b78a50e4f3e33f57", "ae5c94b1427291a6"),
    ("mobilenet_v2", "taps"): ("114c902d8fe35436", "ae5c94b1427291a6"),
}
_VARIANTS = {"norm_q1": {"q": 1.0}, "norm_q2": {"q": 2.0}, "diff": {"mode": "diff"},
             "probes": {"probes": True}, "taps": {"taps": True}}
_MODELS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "vgg11_bn": lambda: small_head(torchvision.models.vgg11_bn()),
    "densenet121": lambda: torchvision.models.densenet121(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
}


def _fingerprint(gm: torch.fx.GraphModule) -> tuple[str, str]:
    buffers = hashlib.sha256()
    for name, b in gm.named_buffers():
        buffers.update(name.encode())
        buffers.update(str(tuple(b.shape)).encode())
        buffers.update(b.double().cpu().numpy().tobytes())
    return hashlib.sha256(gm.code.encode()).hexdigest()[:16], buffers.hexdigest()[:16]


@pytest.mark.parametrize("model_name", list(_MODELS))
def test_path_networks_are_unchanged(model_name: str) -> None:
    prog = PathProgram(_MODELS[model_name]().eval(), (3, 32, 32))
    got = {v: _fingerprint(prog.path_network(**kw)) for v, kw in _VARIANTS.items()}
    want = {v: NETWORKS[(model_name, v)] for v in _VARIANTS}
    assert got == want
