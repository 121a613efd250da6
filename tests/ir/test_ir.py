from __future__ import annotations

import dataclasses

import networkx as nx
import pytest
import torchvision

import fxpath
from fxpath.ir.graph import Graph, Node


def test_nodes_are_frozen_and_replace_makes_copies() -> None:
    n = Node("a", "relu", ("x",), (3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.name = "b"  # type: ignore[misc]
    m = n.with_attrs(k=1)
    assert m.attrs["k"] == 1 and "k" not in n.attrs
    with pytest.raises(TypeError):
        m.attrs["k"] = 2  # type: ignore[index]


def test_networkx_view_and_param_names() -> None:
    prog = fxpath.compile(torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32))
    g = prog.graph
    nxg = g.to_networkx()
    assert nx.is_directed_acyclic_graph(nxg)
    assert nxg.number_of_nodes() == len(g)
    assert list(nx.topological_sort(nxg))[0] == "x"
    assert "layer1.0.conv1.weight" in g.param_names()
    assert "layer1.0.bn1.running_var" in g.param_names()
    conv = g["layer1_0_conv1"]
    assert conv.op == "linear" and conv.attrs["bn"].weight == "layer1.0.bn1.weight"
    assert conv.shape == (64, 8, 8)
    assert "layer1_0_conv1: linear(maxpool)" in g.format()
    assert isinstance(Graph(g.nodes), Graph)
