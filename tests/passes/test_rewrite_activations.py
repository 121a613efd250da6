from __future__ import annotations

import pytest
import torch
from bruteforce import cases
from conftest import assert_same_function, lowered
from fxpath.passes.rewrite_activations import rewrite_activations


@pytest.mark.parametrize("kind", ["relu6", "leaky", "hardtanh", "prelu", "prelu1"])
def test_rewrites_are_exact(kind: str) -> None:
    case = cases.activations(kind)
    out = rewrite_activations(lowered(case.module, case.input_shape))
    assert not {n.op for n in out} & {"relu6", "leaky_relu", "hardtanh", "prelu"}
    assert any(n.op == "relu" for n in out)
    assert_same_function(out, case.module, case.input_shape)


def test_clamp_and_functional_forms() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc(x)
            return torch.cat([y.clamp(min=0.5), torch.clamp(y, -1, 2), torch.nn.functional.relu6(y),
                              torch.nn.functional.leaky_relu(y, 0.2)], 1)

    net = Net().double().eval()
    out = rewrite_activations(lowered(net, (4,)))
    assert {n.op for n in out} <= {"input", "linear", "relu", "add", "concat", "output"}
    assert_same_function(out, net, (4,))
