from __future__ import annotations

import pytest
import torch
from bruteforce import cases, indexing
from conftest import assert_same_function, lowered
from fxpath.passes.lower_pooling import lower_pooling
from fxpath.passes.remove_identities import remove_identities


def test_pools_become_pool_nodes_and_keep_function() -> None:
    case = cases.pools()
    out = lower_pooling(remove_identities(lowered(case.module, case.input_shape)))
    assert not {n.op for n in out} & {"avgpool", "maxpool", "adaptive_avgpool",
                                      "adaptive_maxpool", "mean"}
    assert {n.attrs["reduce"] for n in out if n.op == "pool"} == {"sum", "max"}
    assert_same_function(out, case.module, case.input_shape)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("divisor_override", [None, 5])
def test_avg_pool_coefficients_are_each_windows_divisor(
        ceil_mode: bool, count_include_pad: bool, divisor_override: int | None) -> None:
    k, s, p, h, w = 3, 2, 1, 6, 7
    pool = torch.nn.AvgPool2d(k, s, p, ceil_mode, count_include_pad, divisor_override)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), pool).double().eval()
    graph = lower_pooling(lowered(net, (1, h, w)))
    coeff = next(n for n in graph if n.op == "pool").attrs["coeff"][0]
    assert coeff.shape == (indexing.pool_output_size(h, k, s, p, 1, ceil_mode),
                           indexing.pool_output_size(w, k, s, p, 1, ceil_mode))
    for i in range(coeff.shape[0]):
        for j in range(coeff.shape[1]):
            divisor = indexing.avgpool_divisor(indexing.avgpool_window(i, h, k, s, p),
                                         indexing.avgpool_window(j, w, k, s, p), count_include_pad,
                                         divisor_override)
            assert coeff[i, j].item() == 1.0 / divisor
    assert_same_function(graph, net, (1, h, w))


def test_global_mean_sum_and_adaptive_windows() -> None:
    class Head(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.nn.functional.adaptive_avg_pool2d(x, (2, 3)).flatten(1)
            b = torch.nn.functional.adaptive_max_pool2d(x, (3, 2)).flatten(1)
            return torch.cat([a, b, x.mean((2, 3)), x.sum(-1).flatten(1)], 1)

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), Head()).double().eval()
    graph = lower_pooling(lowered(net, (2, 5, 7)))
    windows = sorted(n.attrs["window"] for n in graph if n.op == "pool")
    assert windows == ["adaptive", "adaptive", "global", "global"]
    adaptive = next(n for n in graph if n.op == "pool" and n.attrs["reduce"] == "sum"
                    and n.attrs["window"] == "adaptive")
    for i in range(2):
        for j in range(3):
            r0, r1 = indexing.adaptive_window(i, 5, 2)
            c0, c1 = indexing.adaptive_window(j, 7, 3)
            assert adaptive.attrs["count"][0, i, j].item() == (r1 - r0) * (c1 - c0)
    assert_same_function(graph, net, (2, 5, 7))
