"""Ops returning several tensors (split, chunk, tensor_split, unbind): exact re-indexings.

Each used result lowers to the same ``reshape``/``getitem`` node as the explicit slicing that
selects it, so a model written with these ops must have the function, the path-norm and the
path-magnitude scores of the same model written with ``x[:, a:b]`` / ``x[:, i]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from conftest import assert_same_function, lowered, randomize_batchnorm
from torch.utils._pytree import tree_leaves

import fxpath
from fxpath import UnsupportedModelError
from fxpath.apps.rescale import rescalable_neurons

SHAPE = (3, 5, 5)
Forward = Callable[[nn.Module, torch.Tensor], object]


class _Body(nn.Module):
    """A stem (conv to 6 channels, ReLU), then ``forward(self, x)``; spare convs for it."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.c1 = nn.Conv2d(2, 2, 3, padding=1)
        self.c2 = nn.Conv2d(2, 2, 1)
        self.c3 = nn.Conv1d(6, 2, 3)
        self.fn = forward

    def forward(self, x: torch.Tensor) -> object:
        return self.fn(self, torch.relu(self.stem(x)))


class _Net(nn.Module):
    """The ops under test sit in ``body``: refusals must say ``at body``."""

    def __init__(self, forward: Forward) -> None:
        super().__init__()
        self.body = _Body(forward)

    def forward(self, x: torch.Tensor) -> object:
        return self.body(x)


def _three(m: nn.Module, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.relu(m.c1(a)) + b, m.c2(c)], 1)


def _res2net(m: nn.Module, spx: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    """timm's Bottle2neck: each scale adds the previous one's output to its own piece."""
    sp = torch.relu(m.c1(spx[0]))
    out = [sp]
    sp = torch.relu(m.c2(sp + spx[1]))
    return [*out, sp, spx[-1]]


def _iterate(m: nn.Module, pieces: tuple[torch.Tensor, ...]) -> torch.Tensor:
    # zip stops after two convs: the third piece is never used
    return sum(conv(p) for p, conv in zip(pieces, (m.c1, m.c2)))  # type: ignore[return-value]


# name -> (forward with the multi-result op, the same forward with explicit slicing)
CASES: dict[str, tuple[Forward, Forward]] = {
    "split_int": (lambda m, x: _three(m, *torch.split(x, 2, dim=1)),
                  lambda m, x: _three(m, x[:, 0:2], x[:, 2:4], x[:, 4:6])),
    "split_list_method": (
        lambda m, x: (lambda a, b: torch.cat([torch.relu(m.c1(a)), b], 1))(*x.split([2, 4], 1)),
        lambda m, x: torch.cat([torch.relu(m.c1(x[:, :2])), x[:, 2:]], 1)),
    "split_last_dim_keywords": (
        lambda m, x: (lambda a, b: torch.cat([b, a], dim=3))(
            *torch.split(x, split_size_or_sections=[2, 3], dim=-1)),
        lambda m, x: torch.cat([x[:, :, :, 2:], x[:, :, :, :2]], dim=3)),
    "chunk_uneven": (lambda m, x: _three(m, *torch.chunk(x, 4, dim=1)),  # 4 asked, 3 given
                     lambda m, x: _three(m, x[:, 0:2], x[:, 2:4], x[:, 4:6])),
    "chunk_unpacked": (lambda m, x: (lambda a, b: a + torch.relu(b))(*x.chunk(2, 1)),
                       lambda m, x: x[:, :3] + torch.relu(x[:, 3:])),
    "chunk_input_keyword": (
        lambda m, x: torch.chunk(input=x, chunks=3, dim=1)[1],
        lambda m, x: x[:, 2:4]),
    "unbind_channels": (
        lambda m, x: (lambda p: p[0] + p[5] + torch.relu(p[2]))(x.unbind(1)),
        lambda m, x: x[:, 0] + x[:, 5] + torch.relu(x[:, 2])),
    "unbind_rows_into_conv1d": (
        lambda m, x: (lambda r: m.c3(r[1]) + m.c3(r[-1]))(torch.unbind(x, dim=2)),
        lambda m, x: m.c3(x[:, :, 1]) + m.c3(x[:, :, 4])),
    "tensor_split_sections": (
        lambda m, x: (lambda p: torch.cat([torch.relu(m.c1(p[0])), p[1], p[3], p[2]], 1))(
            torch.tensor_split(x, 4, dim=1)),  # sizes 2, 2, 1, 1
        lambda m, x: torch.cat([torch.relu(m.c1(x[:, 0:2])), x[:, 2:4], x[:, 5:6],
                                x[:, 4:5]], 1)),
    "tensor_split_indices": (
        lambda m, x: (lambda a, b, c: torch.cat([b, torch.relu(m.c1(c)), a], 1))(
            *x.tensor_split([1, 4], dim=1)),
        lambda m, x: torch.cat([x[:, 1:4], torch.relu(m.c1(x[:, 4:6])), x[:, 0:1]], 1)),
    "iteration": (lambda m, x: _iterate(m, x.split(2, 1)),
                  lambda m, x: _iterate(m, (x[:, 0:2], x[:, 2:4]))),
    "cat_of_whole_tuples": (
        lambda m, x: (torch.cat(x.split(2, dim=1), dim=3), torch.cat(torch.unbind(x, 2), 2)),
        lambda m, x: (torch.cat([x[:, 0:2], x[:, 2:4], x[:, 4:6]], dim=3),
                      torch.cat([x[:, :, i] for i in range(5)], 2))),
    "res2net_residual": (
        lambda m, x: torch.relu(torch.cat(_res2net(m, torch.split(x, 2, 1)), 1) + x),
        lambda m, x: torch.relu(torch.cat(_res2net(m, (x[:, 0:2], x[:, 2:4], x[:, 4:6])), 1)
                                + x)),
    "tuple_slice_returned": (lambda m, x: x.chunk(3, 1)[1:],
                             lambda m, x: (x[:, 2:4], x[:, 4:6])),
    "whole_tuple_returned": (lambda m, x: x.tensor_split(2, dim=2),
                             lambda m, x: (x[:, :, :3], x[:, :, 3:])),
}


def _pair(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    split, sliced = CASES[name]
    model = _Net(split).double().eval()
    reference = _Net(sliced).double().eval()
    reference.load_state_dict(model.state_dict())
    return model, reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_pieces_are_the_explicit_slices(name: str) -> None:
    model, reference = _pair(name)
    assert_same_function(lowered(model, SHAPE), model, SHAPE)
    prog = fxpath.compile(model, SHAPE, dtype=torch.float64)
    assert_same_function(prog.graph, model, SHAPE)
    ref = fxpath.compile(reference, SHAPE, dtype=torch.float64)
    assert prog.path_norm().value == pytest.approx(ref.path_norm().value, rel=1e-12)
    scores, expected = prog.path_magnitude(), ref.path_magnitude()
    assert set(scores) == set(expected)
    for k in expected:
        torch.testing.assert_close(scores[k], expected[k], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_l1_path_norm_is_abs_model_on_ones(name: str) -> None:
    """No max-pooling, BatchNorm or negative coefficient: ``||Phi||_1`` is the sum of the
    |theta| model's outputs on all-ones (every value is non-negative, each ReLU the identity)."""
    model, _ = _pair(name)
    absolute = copy.deepcopy(model)
    with torch.no_grad():
        for p in absolute.parameters():
            p.abs_()
        outs = tree_leaves(absolute(torch.ones(1, *SHAPE, dtype=torch.float64)))
        expected = sum(t.sum().item() for t in outs)
    got = fxpath.path_norm(model, SHAPE, dtype=torch.float64).value
    assert got == pytest.approx(expected, rel=1e-12)


def test_tuple_emits_no_node_and_unused_pieces_none() -> None:
    model, _ = _pair("iteration")  # three pieces, two used
    graph = lowered(model, SHAPE)
    getitems = [n for n in graph if n.op == "reshape" and n.attrs["fn"] == "getitem"]
    assert [n.attrs["index"] for n in getitems] == [(slice(None), slice(0, 2)),
                                                    (slice(None), slice(2, 4))]
    assert not any(n.op == "unsupported" for n in graph)
    assert len(graph) == len(lowered(_pair("iteration")[1], SHAPE))  # as many as the slices


def test_unbind_index_is_an_int() -> None:
    graph = lowered(_pair("unbind_channels")[0], SHAPE)
    indices = [n.attrs["index"] for n in graph if n.op == "reshape"]
    assert indices == [(slice(None), 0), (slice(None), 5), (slice(None), 2)]  # x[:, i]


@pytest.mark.parametrize("forward, expected", [
    (lambda m, x: torch.cat(torch.split(x, 1, dim=0), 1),
     ["split at body: split along the batch dimension (dim=0) separates the samples",
      "cat at body: concatenates the tensors of split = split(...) at body"]),
    (lambda m, x: x.chunk(2, 0)[0],
     ["Tensor.chunk at body: chunk along the batch dimension (dim=0)",
      "getitem at body: selects a result of chunk = Tensor.chunk(...) at body"]),
    (lambda m, x: torch.unbind(x)[1], ["unbind at body: unbind along the batch dimension"]),
    (lambda m, x: x.tensor_split(2, dim=-4)[1],
     ["Tensor.tensor_split at body: tensor_split along the batch dimension (dim=-4)"]),
    (lambda m, x: torch.stack(x.unbind(1), 1), ["stack at body: no path-lifting rule"]),
    (lambda m, x: x.tensor_split(torch.tensor([1, 3]), dim=1)[0],
     ["Tensor.tensor_split at body: tensor_split with sizes or indices given as a tensor"]),
    (lambda m, x: torch.max(x, 1)[0], ["max at body: produces a non-tensor value"]),
])
def test_what_is_not_exact_stays_refused(forward: Forward, expected: list[str]) -> None:
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(_Net(forward).eval(), SHAPE)
    text = str(info.value)
    for line in expected:
        assert line in text
    assert info.value.__cause__ is None  # refused by a rule, not by a crash


# -- real models at small input sizes --------------------------------------------------------------
def _timm(name: str, **kwargs: object) -> nn.Module:
    if name not in timm.list_models(name):
        pytest.skip(f"timm {timm.__version__} has no {name}")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs)


def _reproduces(model: nn.Module, shape: tuple[int, ...]) -> fxpath.PathProgram:
    """The IR computes the model's function, and the path-norm is unchanged under neuron
    rescaling (a twin with other weights, the same function and the same path-lifting)."""
    model = randomize_batchnorm(model).double().eval()
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    assert_same_function(prog.graph, model, shape, batch=2)
    twin = fxpath.rescale(model, shape, factors=(0.25, 1.0, 64.0), seed=0)
    if rescalable_neurons(prog.graph):  # (LeakyReLU nets have none: their rewrite is an add)
        assert any(not torch.equal(a, b) for a, b in zip(model.parameters(),
                                                         twin.parameters()))
    assert fxpath.path_norm(twin, shape).log2 == pytest.approx(prog.path_norm().log2,
                                                                rel=1e-10)
    x = torch.randn(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-8, atol=1e-8)
    return prog


@pytest.mark.parametrize("width", ["x0_5", "x1_0", "x1_5", "x2_0"])
def test_shufflenet_v2_channel_split(width: str) -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model(f"shufflenet_v2_{width}", weights=None)
    prog = _reproduces(model, (3, 64, 64))
    assert any(n.op == "reshape" and n.attrs["fn"] == "getitem" for n in prog.graph)


@pytest.mark.parametrize("name", [pytest.param("res2net50_14w_8s", marks=pytest.mark.slow),
                                  "res2net50_26w_4s", "cspresnet50",
                                  pytest.param("cspdarknet53", marks=pytest.mark.slow),
                                  "dla60_res2net", "fasternet_t2"])
def test_timm_split_models(name: str) -> None:
    prog = _reproduces(_timm(name), (3, 32, 32))
    assert any(n.op == "reshape" and n.attrs["fn"] == "getitem" for n in prog.graph)


def test_fasternet_partial_conv() -> None:
    """FasterNet's partial conv splits off the channels it convolves: lowered. fasternet_t0
    itself is refused for its GELUs only; with ReLU (as fasternet_s/m/l) it compiles."""
    with pytest.raises(UnsupportedModelError) as info:
        fxpath.compile(_timm("fasternet_t0").eval(), (3, 32, 32))
    assert {op.op for op in info.value.ops} == {"GELU"}
    prog = _reproduces(_timm("fasternet_t0", act_layer=nn.ReLU), (3, 32, 32))
    assert any(n.op == "reshape" and n.attrs["fn"] == "getitem" for n in prog.graph)

