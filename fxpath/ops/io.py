"""The ends of the graph: ``input`` (a model input) and ``output`` (the model's outputs).

The output node lists every returned tensor the input reaches, in the order of the model's
returned structure, and (attribute ``names``) the name of each: its key path in that structure
(``"out"``, ``"aux"`` for torchvision's dict; ``"0"``, ``"1"`` for a tuple; ``"output"`` for a
single tensor; see `fxpath.frontend.lower.core.output_name`). The path network sums all of them; the
``output=`` option of `fxpath.compile` keeps only the named ones (`passes.select_outputs`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fxpath import runtime
from fxpath.ir.coordinates import Slot
from fxpath.ir.graph import Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame
from fxpath.ops.core import Attr, Check, Op, Rescaling, RunContext, does_not_apply, register


def _input_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """All-ones (and a zero delta in diff mode), exponent 0."""
    assert e.zero is not None, "generate() creates the zero buffer first"
    ones = e.buffer(f"{n.name}_ones", torch.ones((1, *n.shape)))
    if e.mode == "norm":
        return Value((ones,), e.zero)
    delta = e.call(torch.zeros_like, ones, name=f"{n.name}_delta")
    e.zeros.add(delta)
    return Value((ones, delta), e.zero)


def _input_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """The next model input."""
    return next(ctx.inputs)


def _input_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]) -> Frame:
    """Constant everywhere: the path network feeds all-ones."""
    return tuple((0, 0) for _ in n.shape[1:])


def _output_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """The sum of every output (``total``), then the probes and tapped inputs if asked for."""
    packed = e.call(runtime.output_total, [v.exp for v in ins], [list(v.streams) for v in ins],
                    name="total")
    out = e.unpack(packed, [*e.stream_names("total"), "total_exp"])
    result: tuple[Any, ...] = tuple(out)
    if e.probes is not None:
        result = (*result, e.probes)
    if e.tapped_inputs is not None:
        result = (*result, e.tapped_inputs)
    e.graph.output(result)
    return Value(tuple(out[:-1]), out[-1])


def _output_run(n: Node, xs: list[Tensor], ctx: RunContext) -> tuple[Tensor, ...]:
    """The model's outputs, in order."""
    return tuple(xs)


INPUT = register(Op(
    name="input",
    doc="a model input (per-sample shape); the path network feeds it all-ones",
    attrs={},
    path_rule=_input_path, interpret_rule=_input_run, frame_rule=_input_frame,
    rescale_rule=does_not_apply("an input reads no node: rescaling never reaches it"),
    slots_rule=does_not_apply("no parameters"),
))

_NAMES = Check("tuple[str]", lambda v: isinstance(v, tuple) and all(isinstance(s, str)
                                                                    for s in v))

OUTPUT = register(Op(
    name="output",
    doc="the output layer: every input of this node is an output tensor, `names` the name of "
        "each in the model's returned structure (dict keys, tuple indices)",
    attrs={"names": Attr(_NAMES, required=False)},
    path_rule=_output_path, interpret_rule=_output_run,
    frame_rule=does_not_apply("not an activation: it only collects the outputs"),
    rescale_rule=Rescaling("stops: output neurons are never rescaled"),
    slots_rule=does_not_apply("no parameters"),
))
