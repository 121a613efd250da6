"""Same-network proofs: IR comparison node for node, and up to node names (networkx)."""

from __future__ import annotations

import time

import torch
import torchvision

import fxpath
from fxpath.engine.architecture import graph_difference, same_structure
from fxpath.ir.graph import Graph


def _renamed(g: Graph, prefix: str = "n") -> Graph:
    """The same IR with every node renamed (as another front end would name them)."""
    names = {n.name: f"{prefix}{i}" for i, n in enumerate(g)}
    nodes = [n.replace(name=names[n.name], inputs=tuple(names[i] for i in n.inputs)) for n in g]
    return Graph(nodes)


def test_renamed_graph_is_the_same_network() -> None:
    g = fxpath.compile(torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32)).graph
    t = time.perf_counter()
    assert graph_difference(g, _renamed(g)) is None
    assert time.perf_counter() - t < 5.0  # labelled VF2 on a ResNet-18 IR: fast
    assert graph_difference(g, g) is None


def test_swapped_inputs_or_other_attributes_are_another_network() -> None:
    class Cat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 3)
            self.b = torch.nn.Linear(4, 3)
            self.head = torch.nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.a(x), torch.relu(self.b(x))], 1))

    g = fxpath.compile(Cat().eval(), (4,)).graph
    cat = next(n for n in g if n.op == "concat")
    swapped = Graph([n.replace(inputs=n.inputs[::-1]) if n is cat else n for n in g])
    assert not same_structure(g, _renamed(swapped))
    assert graph_difference(g, _renamed(swapped)) is not None
    other = Graph([n.with_attrs(dim=0) if n is cat else n for n in g])
    assert graph_difference(g, _renamed(other)) is not None
