"""frame_convs: which convs run on their compressed image, and that nothing else changes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_same_function, lowered
from fxpath.passes.frame_convs import frame_convs
from fxpath.passes.pipeline import PIPELINE, normalize

import fxpath
from fxpath.codegen.frames import interior_frames
from fxpath.kernels.frame_conv import compression
from fxpath.ops.linear import MAX_KEPT
from fxpath.ops.verify import verify


def _net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(4, 4, 1), torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 3)).eval()


def test_rewrites_exactly_the_convs_whose_compression_pays() -> None:
    graph = normalize(lowered(_net(), (3, 16, 16)))
    frames = interior_frames(graph)
    out = frame_convs(graph)
    verify(out, after=["frame_convs"], final=True)  # frame_conv's schema holds
    for before, after in zip(graph, out):
        assert after.name == before.name and after.inputs == before.inputs
        if after.op != "frame_conv":
            assert after == before
            continue
        a = after.attrs
        frame = frames[before.inputs[0]]
        assert before.op == "linear" and a["frame"] == frame
        assert {k: v for k, v in a.items() if k != "frame"} == dict(before.attrs)
        cuts = compression(graph[before.inputs[0]].shape[1:], a["kernel"], a["stride"],
                           a["padding"], a["dilation"], frame)
        assert math.prod((c.size - c.count) / c.size for c in cuts) <= MAX_KEPT
    ops = [n.op for n in out if n.op in ("linear", "frame_conv")]
    # the zero-padded 3x3 convs on an all-ones input compress; the reflect-padded conv, the
    # 1x1 conv behind it (its input varies everywhere) and the dense layer do not
    assert ops == ["frame_conv", "frame_conv", "linear", "linear", "linear"]


def test_min_macs_keeps_small_convs_plain_and_the_pipeline_runs_it_last() -> None:
    graph = normalize(lowered(_net(), (3, 16, 16)))
    assert not any(n.op == "frame_conv" for n in frame_convs(graph, min_macs=10**12))
    assert [name for name, _ in PIPELINE][-1] == "frame_convs"
    piped = normalize(lowered(_net(), (3, 16, 16)), frame_min_macs=0)
    assert piped == frame_convs(graph)


def test_the_rewrite_changes_no_value_and_shows_in_the_program_graph() -> None:
    net = _net().double()
    framed = fxpath.compile(net, (3, 16, 16), dtype=torch.float64)
    plain = fxpath.compile(net, (3, 16, 16), dtype=torch.float64, interior=False)
    assert sum(n.op == "frame_conv" for n in framed.graph) == 2
    assert not any(n.op == "frame_conv" for n in plain.graph)
    assert_same_function(framed.graph, net, (3, 16, 16))  # the interpreter: a plain conv
    assert "compact_conv(" in framed.path_network().code
    assert framed.path_norm().log2 == pytest.approx(plain.path_norm().log2, rel=1e-12)
    a, b = framed.path_magnitude(), plain.path_magnitude()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-15)

