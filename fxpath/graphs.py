"""CUDA-graph replay of repeated path-network calls on a GPU.

At batch 1 a path network is hundreds of tiny kernels (a conv and a few scale-tracking ops per
layer, twice that with the backward of the scores): on a GPU the time goes to launching them
from Python, not to running them. The generated networks never read a value on the host (scale
tracking keeps exponents as 0-dim tensors), so one call can be captured as a CUDA graph and
replayed as a single launch. The same kernels run on the same inputs as in the eager call (up to
the run-to-run order of cuDNN's weight-gradient sums, which is not fixed in eager mode either).

`GraphedCall` runs its first call eagerly (a one-off call pays no capture), captures on the
second and replays from then on. The tensors fed to the capturing call become the graph's
inputs: a later call with those very tensors (the program's magnitude buffers, refreshed in
place from the live parameters before every call) copies nothing; other tensors are copied into
them. If a capture fails, the call falls back to eager for good, with a warning.
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
        self._captured: list[Tensor] = []
        self._out: Any = None

    def __call__(self, *inputs: Tensor) -> Any:
        self.calls += 1
        if self.failed or self.calls == 1:
            return self.fn(*inputs)
        if self.graph is None:
            try:
                self._capture(inputs)
            except RuntimeError as err:  # e.g. an op that cannot be captured
                self.failed, self.graph = True, None
                warnings.warn(f"fxpath: CUDA-graph capture of the path network failed ({err}); "
                              "running it eagerly from now on", RuntimeWarning, stacklevel=3)
                return self.fn(*inputs)
        else:
            self._feed(inputs)
        self.graph.replay()
        return self._out

    def _feed(self, inputs: Sequence[Tensor]) -> None:
        """Bring the graph's inputs up to date: a tensor captured as an input is read in place
        (its current values are what the graph sees); any other is copied into it."""
        if len(inputs) != len(self._static):
            raise RuntimeError(f"a captured path network takes {len(self._static)} inputs, "
                               f"got {len(inputs)}")
        for s, a, c in zip(self._static, inputs, self._captured):
            if a is not c:
                s.copy_(a)

    def _capture(self, inputs: Sequence[Tensor]) -> None:
        self._static = [a.detach() for a in inputs]  # the same memory as the inputs
        self._captured = list(inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as CUDA graphs need
            self.fn(*self._static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self.fn(*self._static)
        self.graph = graph
