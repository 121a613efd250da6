"""`CompiledNetwork`: a model traced and normalized once, bound to its live parameters.

It holds what every path quantity needs (`fxpath.quantities`): the normalized IR and its
coordinate slots, the `Runner` (`fxpath.engine.runner`) that runs the generated path networks,
and the checks that tie them to the live model (same module tree, same network, finite
parameters). `fxpath.program.PathProgram` adds the path quantities on top of it.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.codegen.generate import tapped_nodes
from fxpath.codegen.lift import Slot, slots
from fxpath.engine.architecture import ModuleTree, graph_difference, mismatch, state_dict_difference
from fxpath.engine.runner import Runner
from fxpath.errors import ArchitectureMismatchError, ArgumentError, FxPathError, NonFiniteError
from fxpath.frontend.build import (
    Model,
    build_ir,
    canonical_ir,
    exported_shapes,
    is_exported,
    param_store,
    state_keys,
    tensors_of,
)
from fxpath.ir.graph import BatchNormRef
from fxpath.ir.params import Params, ParamSource
from fxpath.validate import as_input_shapes, check_model, compute_dtype, leading_size_warning

__all__ = ["GPU_INTERIOR_MIN_MACS", "CompiledNetwork", "check_output"]

#: on a GPU, ``interior=None`` compresses only convs of at least this many multiply-adds
GPU_INTERIOR_MIN_MACS = 500_000_000


class CompiledNetwork:
    """A model's normalized IR and path-network runner, tied to the model's live tensors.

    Nothing is copied: every quantity reads the model's live parameters through
    `live_source` or `source_for`, which first prove that the model (or another parameter
    set) is still the compiled network.

    The arguments are those of `fxpath.compile`; ``compile`` is the deprecated name of
    ``torch_compile`` (a `DeprecationWarning`).
    """

    def __init__(self, model: Model,
                 input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 fold_bn: bool = True, torch_compile: bool = False,
                 cuda_graphs: bool | None = None, interior: bool | None = None,
                 debug: bool = False, front_end: str = "fx",
                 output: str | Sequence[str] | None = None,
                 compile: bool | None = None,  # noqa: A002
                 ) -> None:
        if compile is not None:  # the switch's old name
            warnings.warn(f"{type(self).__name__}(compile=...) is deprecated: pass "
                          "torch_compile=... instead", DeprecationWarning, stacklevel=2)
            torch_compile = bool(compile) or torch_compile
        self.model = check_model(model)
        outputs = check_output(output)
        self.input_shapes = _input_shapes(model, input_shape)
        self.dtype = compute_dtype(tensors_of(model), dtype)
        self.device = _device(model, device)
        self.fold_bn = bool(fold_bn)
        self.front_end = front_end
        if cuda_graphs and self.device.type != "cuda":
            raise ArgumentError(f"cuda_graphs=True needs a CUDA device, the program runs on "
                                f"{self.device}: pass device='cuda' or leave cuda_graphs unset")
        # compressed-image convs pay off where convs are compute-bound (CPU); on a GPU at
        # batch 1 their extra kernels cost more than the arithmetic they save, except on big
        # convs (VGG's: 0.9-1.9G multiply-adds; ResNet's and DenseNet's are <= 0.12G)
        use_interior = interior is not False
        min_macs = (GPU_INTERIOR_MIN_MACS if interior is None and self.device.type != "cpu"
                    else 0)
        #: the passes' settings: every IR compared with this one is normalized alike
        self._passes = {"fold_bn": self.fold_bn, "front_end": front_end,
                        "frame_min_macs": min_macs if use_interior else None,
                        "outputs": outputs}
        self._fx_graph, self.graph = build_ir(model, self.input_shapes, debug=debug,
                                              **self._passes)
        leading = None if is_exported(model) else leading_size_warning(model, self.input_shapes)
        if leading is not None:  # (4, 16) for an MLP: four stacked copies, or a batch by mistake
            warnings.warn(leading, UserWarning, stacklevel=_caller_level())
        self.slots: tuple[Slot, ...] = slots(self.graph)
        weight_slot = {s.node: i for i, s in reversed(list(enumerate(self.slots)))}
        self.taps = [(n, weight_slot[n.name]) for n in tapped_nodes(self.graph)]
        self._source = ParamSource(param_store(model), self.graph.param_names(),
                                   derived=self.graph.derived())
        self._tree = None if is_exported(model) else ModuleTree(model)
        self._bn_eps = {bn.running_var: bn.eps for n in self.graph
                        if isinstance(bn := n.attrs.get("bn"), BatchNormRef)}
        self.runner = Runner(self.graph, self.slots, dtype=self.dtype, device=self.device,
                             torch_compile=torch_compile, cuda_graphs=cuda_graphs,
                             grad_frames=use_interior)
        self._verified: dict[int, tuple[weakref.ref, ModuleTree | None]] = {}

    # -- the live model -----------------------------------------------------------------------
    def _check_live(self) -> None:
        """Re-read the module tree: a replaced or added module is accepted only when the model
        still normalizes to the compiled IR."""
        moved = None if self._tree is None else self._tree.changed(self.model)
        if moved is None:
            return
        fx_graph, graph = build_ir(self.model, self.input_shapes, **self._passes)
        diff = graph_difference(self.graph, graph)
        if diff is not None:
            raise ArchitectureMismatchError(
                f"the model changed since fxpath.compile (at {moved}) and is no longer the "
                f"compiled network: {diff}. Compile it again")
        self._source = ParamSource(self.model, self.graph.param_names(), self._source.shapes,
                                   self.graph.derived())
        self._tree = ModuleTree(self.model)
        self._fx_graph = fx_graph
        self.__dict__.pop("traced", None)

    def check_same_network(self, other: Model) -> None:
        """Prove that ``other`` is the compiled network (same IR, names and shapes)."""
        hit = self._verified.get(id(other))
        if hit is not None and hit[0]() is other and (hit[1] is None
                                                      or hit[1].changed(other) is None):
            return
        check_model(other, "the second model")
        _, graph = build_ir(other, self.input_shapes, **self._passes)
        diff = graph_difference(self.graph, graph)
        if diff is not None and (self._fx_graph is None or is_exported(other)):
            # an exported program may be decomposed: compare on fully decomposed ATen graphs
            canon = functools.partial(canonical_ir, shapes=self.input_shapes,
                                      fold_bn=self.fold_bn)
            if graph_difference(canon(self.model), canon(other)) is None:
                diff = None
        if diff is not None:
            raise mismatch(diff)
        tree = None if is_exported(other) else ModuleTree(other)
        self._verified[id(other)] = (weakref.ref(other), tree)

    def live_source(self, check: bool = True) -> ParamSource:
        """The live model's parameters (after checking its module tree, unless ``check``)."""
        if check:
            self._check_live()
        return self._source

    def source_for(self, params: Params | None) -> ParamSource:
        """The live parameters of the model (``None``) or of another parameter set, proven to
        be of the compiled network."""
        self._check_live()
        if params is None or params is self.model:
            return self._source
        if isinstance(params, nn.Module) or is_exported(params):
            self.check_same_network(params)
            return ParamSource(param_store(params), self.graph.param_names(),
                               self._source.shapes, self.graph.derived())
        if isinstance(params, Mapping):
            diff = state_dict_difference(state_keys(self.model), params)
            if diff is not None:
                raise mismatch(diff)
        else:
            raise ArgumentError(f"expected a model or a state dict (name -> tensor), got "
                                f"{type(params).__name__}")
        return ParamSource(params, self.graph.param_names(), self._source.shapes,
                           self.graph.derived())

    def require_finite(self, log2s: Sequence[float], *sources: ParamSource) -> None:
        """Raise unless every ``log2`` is finite or ``-inf`` (a zero quantity): NaN or inf
        come from non-finite parameters (named) or from a float overflow inside a layer."""
        if all(not math.isnan(v) and v != math.inf for v in log2s):
            return
        labels = ("", "") if len(sources) == 1 else ("first parameter set: ", "second: ")
        bad = [f"{label}{name}" for label, src in zip(labels, sources)
               for name in src.nonfinite(self._bn_eps)]
        if bad:
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            raise NonFiniteError(f"NaN or inf in {', '.join(bad[:8])}{more}: path quantities of "
                                 "non-finite parameters are undefined", bad)
        raise FxPathError(f"the path network overflowed {self.dtype} inside one layer (its "
                          "parameters are finite but too large for it): compile with "
                          "dtype=torch.float64")

    def check_total(self, total: Tensor) -> None:
        """One host sync: the path network's output total must be finite."""
        if not bool(torch.isfinite(total.detach())):
            self.require_finite([math.nan], self._source)

    def param_shape(self, name: str) -> torch.Size:
        """The shape of parameter ``name`` (as the model stores it), or of a derived
        coordinate."""
        return self._source.shape_of(name)


def check_output(output: Any) -> tuple[str, ...] | None:
    """``output=`` as a tuple of output names, or None (every output)."""
    if output is None:
        return None
    names = (output,) if isinstance(output, str) else output
    if isinstance(names, (bytes, Mapping)) or not isinstance(names, Sequence) or not names \
            or not all(isinstance(n, str) for n in names):
        raise ArgumentError(f"output must be the name of a model output or a list of names "
                            f"(e.g. output='aux' for a dict output, output='1' for the second "
                            f"item of a tuple), got {output!r}")
    return tuple(names)


def _input_shapes(model: Model, input_shape: Any) -> list[tuple[int, ...]]:
    """The per-sample input shapes: given, or an exported program's own."""
    if not is_exported(model):
        if input_shape is None:
            raise ArgumentError("input_shape is required for a module: the per-sample input "
                                "shape without the batch dimension, e.g. (3, 224, 224)")
        return as_input_shapes(input_shape)
    own = exported_shapes(model)
    if input_shape is not None and as_input_shapes(input_shape) != own:
        raise ArgumentError(f"input_shape {as_input_shapes(input_shape)} differs from the "
                            f"exported program's inputs {own}: export again, or pass None")
    return own


def _device(model: Model, device: Any) -> torch.device:
    """``device`` as a torch.device, default the device of the model's first parameter."""
    if device is None:
        return tensors_of(model)[0].device
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # the device exists and its backend is available
    except (RuntimeError, TypeError, AssertionError, ValueError) as exc:
        raise ArgumentError(f"device must be an available torch.device or a name such as "
                            f"'cpu' or 'cuda:0', got {device!r} ({_first_line(exc)})") from exc
    return device


def _caller_level() -> int:
    """The ``stacklevel`` (for a warning raised by the calling function) of the innermost
    frame outside the fxpath package: the user's call, through whichever public function."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120]
