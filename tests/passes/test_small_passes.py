"""remove_identities, eliminate_dead_nodes, check_supported, and the pipeline."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_function, lowered
from fxpath.passes.check_supported import check_supported
from fxpath.passes.eliminate_dead_nodes import eliminate_dead_nodes
from fxpath.passes.pipeline import PIPELINE, normalize
from fxpath.passes.remove_identities import remove_identities

from fxpath import UnsupportedModelError


class Branchy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.drop = torch.nn.Dropout(0.5)
        self.unused = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.fc(x)).contiguous()
        self.unused(y)  # computed, never returned: no path reaches the output
        return torch.relu(y.view(y.shape[0], 4))


def test_remove_identities_and_dead_nodes() -> None:
    net = Branchy().double().eval()
    g = lowered(net, (4,))
    assert {"identity"} <= {n.op for n in g}
    g2 = remove_identities(g)
    assert "identity" not in {n.op for n in g2}
    assert not [n for n in g2 if n.op == "reshape"]  # the view keeps the shape
    g3 = eliminate_dead_nodes(g2)
    assert "unused" in g2 and "unused" not in g3
    assert_same_function(g3, net, (4,))


def test_check_supported_lists_every_op() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.SiLU(), torch.nn.Linear(4, 4),
                              torch.nn.GELU(), torch.nn.LayerNorm(4)).eval()
    with pytest.raises(UnsupportedModelError) as info:
        check_supported(lowered(net, (4,)))
    text = str(info.value)
    assert "SiLU at 1: not positively homogeneous" in text
    assert "GELU at 3" in text and "LayerNorm at 4: data-dependent normalization" in text
    assert len(info.value.ops) == 3


def test_pipeline_order_and_debug_verification() -> None:
    names = [n for n, _ in PIPELINE]
    assert names[0] == "check_supported"
    assert names.index("fold_batchnorm") < names.index("rewrite_activations")
    net = Branchy().double().eval()
    g = normalize(lowered(net, (4,)), debug=True)
    assert {n.op for n in g} <= {"input", "linear", "relu", "output"}
    assert_same_function(g, net, (4,))
