"""`Runner`: where and how a program's path networks run.

A `PathProgram` is the compiled pipeline (trace, IR, coordinates) and the checks on the live
model. Its runner holds what depends on the machine: the device and compute dtype, the
generated networks (built once per variant, optionally wrapped in ``torch.compile``), CUDA
graphs of repeated calls, IEEE float32 (no TF32) around every call, and the buffers into which
the live magnitudes are recomputed on every call. The path quantities (`fxpath.quantities.norm`,
`fxpath.quantities.metric`, `fxpath.quantities.scores`) are thin layers that ask the runner to run a
network.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor

from fxpath.codegen.generate import generate
from fxpath.codegen.lift import Slot, factored, lift, split_power
from fxpath.engine.cuda_graphs import GraphedCall
from fxpath.engine.memory import empty_scores
from fxpath.engine.precision import ieee_float32
from fxpath.errors import ArgumentError
from fxpath.ir.coordinates import Factored
from fxpath.ir.graph import Graph
from fxpath.ir.params import ParamSource

__all__ = ["Runner"]


class Runner:
    """Runs the path networks of one normalized IR on one device in one dtype.

    Attributes:
        graph: the IR the networks are generated from.
        slots: the coordinates, in network argument order.
        dtype, device: where and in what the networks compute.
        use_compile: wrap generated networks in ``torch.compile``.
        use_graphs: replay repeated calls from CUDA graphs.
        grad_frames: convs run their backward on the frame of their output gradient where
            it has one (`fxpath.kernels.grad_frame`; CPU only).
    """

    def __init__(self, graph: Graph, slots: Sequence[Slot], *, dtype: torch.dtype,
                 device: torch.device, torch_compile: bool = False,
                 cuda_graphs: bool | None = None, grad_frames: bool = False) -> None:
        if cuda_graphs and device.type != "cuda":
            raise ArgumentError(f"cuda_graphs=True needs a CUDA device, the program runs on "
                                f"{device}: pass device='cuda' or leave cuda_graphs unset")
        self.graph = graph
        self.slots = tuple(slots)
        self.dtype, self.device = dtype, device
        self.use_compile = bool(torch_compile)
        self.grad_frames = bool(grad_frames)
        self.use_graphs = (device.type == "cuda" and not torch_compile if cuda_graphs is None
                           else bool(cuda_graphs))
        self._networks: dict[tuple[str, float, bool, bool], Any] = {}
        self._graphed: dict[tuple[Any, ...], GraphedCall] = {}
        self._buffers: dict[float, dict[str, Tensor]] = {}
        #: slot name -> the two tensors the path-metric's envelope is written into
        self._envelope_buffers: dict[str, tuple[Tensor, Tensor]] = {}
        #: the differentiable path's own magnitude buffers, and weak references to the aliases
        #: of them its last call handed out (alive while an autograd graph saves them)
        self._grad_buffers: dict[str, Tensor] | None = None
        self._grad_aliases: list[weakref.ref[Tensor]] = []
        #: q -> (log2 of a path-norm, the magnitude tensors it was computed from)
        self._norm_memo: dict[float, tuple[float, dict[str, Tensor]]] = {}

    def check_runnable(self) -> None:
        """Refuse to compute on the meta device (its networks can still be printed)."""
        if self.device.type == "meta":
            raise ArgumentError("a program on the meta device shows its path networks "
                                "(path_network) but computes nothing: compile for 'cpu' or a GPU")

    def network(self, q: float, mode: str, probes: bool = False,
                taps: bool = False) -> fx.GraphModule:
        """The generated path network of one variant (cached; see `fxpath.codegen.generate`)."""
        scaled = mode == "norm" and q != 1.0 and not probes and not taps
        key = (mode, q, bool(probes), bool(taps))
        if key not in self._networks:
            gm = generate(self.graph, self.slots, mode=mode, q=q, probes=bool(probes),
                          taps=bool(taps), scaled=scaled, grad_frames=self.grad_frames)
            gm = gm.to(device=self.device, dtype=self.dtype)
            self._networks[key] = (torch.compile(gm, dynamic=False) if self.use_compile else gm)
        return self._networks[key]

    def call(self, key: tuple[Any, ...], fn: Callable[..., Any], inputs: Sequence[Tensor],
             borrowed: frozenset[int] = frozenset()) -> Any:
        """``fn(*inputs)`` in IEEE float32 (no TF32), replayed from a CUDA graph on repeated
        calls when ``use_graphs`` (the outputs are then the graph's static tensors: read or
        copy them before the next call with the same ``key``)."""
        with ieee_float32():
            if not self.use_graphs:
                return fn(*inputs)
            if key not in self._graphed:
                self._graphed[key] = GraphedCall(fn)
            return self._graphed[key](*inputs, borrowed=borrowed)

    def lift(self, source: ParamSource, q: float | None = None,
             out: Mapping[str, Tensor] | None = None,
             order: Sequence[Slot] | None = None) -> dict[str, Tensor]:
        """The coordinates of ``source`` (signed, or ``|c|^q``), by slot name."""
        return lift(self.graph, lambda n: source.fetch(n, self.dtype, self.device),
                    order or self.slots, q=q, out=out)

    def factored(self, source: ParamSource) -> dict[str, Tensor | Factored]:
        """The signed coordinates of ``source``, folded BatchNorm weights left as
        `fxpath.ir.coordinates.Factored` (the path-metric's envelope multiplies them block by
        block: nothing coordinate-sized is written)."""
        with torch.no_grad():
            return factored(self.graph, lambda n: source.fetch(n, self.dtype, self.device),
                            self.slots)

    def live_magnitudes(self, source: ParamSource, q: float) -> list[Tensor]:
        """``|coordinate|^q`` of ``source``, without autograd, recomputed on every call into
        buffers the runner keeps (no fresh memory; the same tensors every call, so a CUDA
        graph reads them in place). Never hand them out: the next call overwrites them."""
        bufs = self._buffers.get(q)
        self._norm_memo.pop(q, None)  # the buffers' content changes now
        with torch.no_grad():
            values = self.lift(source, q, out=bufs)
        if bufs is None:
            self._buffers[q] = values
        return list(values.values())

    def grad_magnitudes(self, source: ParamSource) -> list[Tensor]:
        """``|coordinate|`` of ``source`` (q = 1) recorded by autograd, for a path network
        that is their only reader: conv/linear weights are written into buffers kept for
        this path alone (`fxpath.ops.linear` hands out aliases of them), unless a graph still
        saves the aliases of the last call (then into fresh tensors, as `lift` does): a
        pending backward never reads a rewritten buffer. Under inference mode (no buffer can
        be made there for later), fresh tensors."""
        if torch.is_inference_mode_enabled():
            return list(self.lift(source, 1.0).values())
        busy = any(ref() is not None for ref in self._grad_aliases)
        if self._grad_buffers is None:
            with torch.no_grad():
                self._grad_buffers = self.lift(source, 1.0)
        values = list(self.lift(source, 1.0, out=None if busy else self._grad_buffers).values())
        if not busy:
            own = {b.data_ptr() for b in self._grad_buffers.values() if b.numel()}
            self._grad_aliases = [weakref.ref(v) for v in values if v.data_ptr() in own]
        return values

    def envelope_buffers(self, name: str, like: Tensor) -> tuple[Tensor, Tensor]:
        """Two tensors shaped like ``like`` that the path-metric writes the envelope of slot
        ``name`` into, kept from call to call: every call overwrites them entirely, and the
        metric network reads them before the next envelope is computed."""
        bufs = self._envelope_buffers.get(name)
        if bufs is None or bufs[0].shape != like.shape or bufs[0].dtype != like.dtype \
                or bufs[0].device != like.device:
            bufs = tuple(empty_scores(like.shape, like.dtype, like.device) for _ in range(2))
            self._envelope_buffers[name] = bufs  # type: ignore[assignment]
        return bufs  # type: ignore[return-value]

    def remember_norm(self, q: float, log2: float, magnitudes: Sequence[Tensor]) -> None:
        """Record the path-norm just computed from ``live_magnitudes(..., q)``."""
        self._norm_memo[q] = (log2, dict(zip((s.name for s in self.slots), magnitudes)))

    def norm_memo(self) -> tuple[float, dict[str, Tensor]] | None:
        """The last l^1 path-norm of the live model (log2) and the magnitudes, by slot name,
        it was computed from; ``None`` after anything rewrote them. A caller reuses the norm
        only for coordinates whose magnitudes equal these bit for bit: a check of content,
        not a cache key, so nothing can go stale."""
        return self._norm_memo.get(1.0)

    def borrowed(self, args: Sequence[Tensor], q: float = 1.0) -> frozenset[int]:
        """Positions of the runner's own magnitude buffers in ``args``: a CUDA graph reads
        them in place (they are refreshed from the live weights before every call)."""
        own = {id(t) for t in self._buffers.get(q, {}).values()}
        return frozenset(i for i, t in enumerate(args) if id(t) in own)

    def split_inputs(self, source: ParamSource, q: float) -> list[Tensor]:
        """The scaled norm network's arguments for ``q != 1``: mantissas, then exponents,
        lifted one layer at a time (one temporary alive)."""
        mantissas: list[Tensor] = []
        exponents: list[Tensor] = []
        for group in self._slot_groups:
            m, k = split_power(self.lift(source, order=group), q)
            mantissas += m
            exponents += k
        return [*mantissas, *exponents]

    @functools.cached_property
    def _slot_groups(self) -> list[tuple[Slot, ...]]:
        """The slots, grouped by node, in slot order."""
        groups: dict[str, list[Slot]] = {}
        for s in self.slots:
            groups.setdefault(s.node, []).append(s)
        return [tuple(g) for g in groups.values()]
