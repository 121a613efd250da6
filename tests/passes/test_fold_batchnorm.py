from __future__ import annotations

import torch
from bruteforce import cases
from conftest import assert_same_function, lowered
from fxpath.passes.fold_batchnorm import fold_batchnorm
from fxpath.passes.remove_identities import remove_identities


def test_folds_into_lone_producer_and_keeps_function() -> None:
    case = cases.conv_bn(fold=True)
    g = remove_identities(lowered(case.module, case.input_shape))
    out = fold_batchnorm(g)
    assert not [n for n in out if n.op == "batchnorm"]
    folded = [n for n in out if n.op == "linear" and "bn" in n.attrs]
    assert len(folded) == 3  # two convs and the linear followed by BatchNorm1d
    assert not [n for n in out if n.op == "affine"]
    assert_same_function(out, case.module, case.input_shape)


def test_standalone_after_concat_and_when_disabled() -> None:
    case = cases.bn_after_concat()
    out = fold_batchnorm(remove_identities(lowered(case.module, case.input_shape)))
    assert sorted(n.name for n in out if n.op == "affine") == ["bn", "bn_b"]
    assert_same_function(out, case.module, case.input_shape)
    conv = cases.conv_bn(fold=False)
    kept = fold_batchnorm(lowered(conv.module, conv.input_shape), fold=False)
    assert not [n for n in kept if "bn" in n.attrs and n.op == "linear"]
    assert len([n for n in kept if n.op == "affine"]) == 3
    assert_same_function(kept, conv.module, conv.input_shape)


def test_producer_with_two_users_is_not_folded() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return self.bn(y) + y

    net = Net().double().eval()
    out = fold_batchnorm(lowered(net, (2, 4, 4)))
    assert [n.op for n in out if n.name == "bn"] == ["affine"]
    assert_same_function(out, net, (2, 4, 4))
