"""CUDA-graph replay of repeated path-network calls on a GPU.

At batch 1 a path network is hundreds of tiny kernels (a conv and a few scale-tracking ops per
layer, twice that with the backward of the scores): on a GPU the time goes to launching them
from Python, not to running them. The generated networks never read a value on the host (scale
tracking keeps exponents as 0-dim tensors), so one call can be captured as a CUDA graph and
replayed as a single launch. The same kernels run on the same inputs as in the eager call (up to
the run-to-run order of cuDNN's weight-gradient sums, which is not fixed in eager mode either).

`GraphedCall` runs its first call eagerly (a one-off call pays no capture), captures on the
second and replays from then on. Inputs marked *borrowed* (the program's magnitude buffers) are
read in place by the graph: their current values, whatever changed them, are what a replay sees, and
nothing is copied. If a borrowed input is another tensor than at capture (or its memory was
swapped), the graph is captured again: it never writes into a tensor it does not own. Other
inputs (small per-call tensors: biases, BatchNorm scales) are copied into the graph's own
buffers. If a capture fails, the call falls back to eager for good, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["GraphedCall"]


class GraphedCall:
    """``fn(*inputs)`` for CUDA tensors, replayed from one CUDA graph from the second call on.

    The outputs of a replayed call are the graph's static tensors: the next call overwrites
    them, so callers copy what they keep (`PathProgram` does).
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed = False
        self._static: list[Tensor] = []
        self._borrowed: list[Tensor | None] = []  # the borrowed input objects, by position
        self._out: Any = None

    def __call__(self, *inputs: Tensor, borrowed: frozenset[int] = frozenset()) -> Any:
        self.calls += 1
        if self.failed or self.calls == 1:
            return self.fn(*inputs)
        if self.graph is not None and not self._feed(inputs, borrowed):
            self.graph = None  # a borrowed input was replaced: capture anew
        if self.graph is None:
            try:
                self._capture(inputs, borrowed)
            except RuntimeError as err:  # e.g. an op that cannot be captured
                self.failed, self.graph = True, None
                warnings.warn(f"fxpath: CUDA-graph capture of the path network failed ({err}); "
                              "running it eagerly from now on", RuntimeWarning, stacklevel=3)
                return self.fn(*inputs)
        self.graph.replay()
        return self._out

    def _feed(self, inputs: Sequence[Tensor], borrowed: frozenset[int]) -> bool:
        """Bring the graph's inputs up to date; ``False`` when it must be captured anew (the
        inputs differ in number or layout, or a borrowed input is another tensor now)."""
        if len(inputs) != len(self._static):
            return False
        for i, (s, a, b) in enumerate(zip(self._static, inputs, self._borrowed)):
            if b is not None:  # read in place: the very tensor captured, on the same memory
                if a is not b or i not in borrowed or a.data_ptr() != s.data_ptr():
                    return False
            elif i in borrowed or a.shape != s.shape or a.dtype != s.dtype:
                return False
            else:
                s.copy_(a)
        return True

    def _capture(self, inputs: Sequence[Tensor], borrowed: frozenset[int]) -> None:
        self._static = [a.detach() if i in borrowed else a.detach().clone()
                        for i, a in enumerate(inputs)]
        self._borrowed = [a if i in borrowed else None for i, a in enumerate(inputs)]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graphs need
            self.fn(*self._static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.fn(*self._static)
        self.graph = graph
