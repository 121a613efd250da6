"""CUDA-graph input feeding (`fxpath.engine.cuda_graphs.GraphedCall._feed`), checked without a GPU:
the model's parameters are read in place, never written; anything else is copied into the graph's
own buffers; a replaced parameter (or one whose memory was swapped) forces a new capture."""

from __future__ import annotations

import torch

from fxpath.engine.cuda_graphs import GraphedCall


def _captured(inputs: list[torch.Tensor], borrowed: frozenset[int]) -> GraphedCall:
    call = GraphedCall(lambda *xs: None)
    call._static = [a.detach() if i in borrowed else a.detach().clone()
                    for i, a in enumerate(inputs)]
    call._borrowed = [a if i in borrowed else None for i, a in enumerate(inputs)]
    return call


def test_borrowed_inputs_are_read_in_place_and_others_copied() -> None:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    bias = torch.randn(4)
    call = _captured([weight, bias], frozenset({0}))
    with torch.no_grad():
        weight.data.mul_(2.0)  # the graph's input is the weight's own memory
    fresh_bias = torch.randn(4)
    assert call._feed([weight, fresh_bias], frozenset({0}))
    assert torch.equal(call._static[0], weight) and torch.equal(call._static[1], fresh_bias)
    assert call._static[1].data_ptr() != fresh_bias.data_ptr()


def test_replaced_parameter_forces_a_new_capture_and_is_never_written() -> None:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    kept = weight.detach().clone()
    call = _captured([weight, torch.randn(4)], frozenset({0}))
    other = torch.nn.Parameter(torch.randn(4, 3))
    assert not call._feed([other, torch.randn(4)], frozenset({0}))
    assert torch.equal(weight.detach(), kept)  # the old parameter was not overwritten


def test_swapped_memory_forces_a_new_capture() -> None:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    call = _captured([weight], frozenset({0}))
    weight.data = torch.randn(4, 3)  # same Parameter object, new memory
    assert not call._feed([weight], frozenset({0}))


def test_an_input_no_longer_borrowed_or_of_another_shape_forces_a_new_capture() -> None:
    weight = torch.nn.Parameter(torch.randn(4, 3))
    call = _captured([weight, torch.randn(4)], frozenset({0}))
    assert not call._feed([weight, torch.randn(4)], frozenset())
    assert not call._feed([weight, torch.randn(5)], frozenset({0}))
    assert not call._feed([weight], frozenset({0}))
