"""A ``torch.compile`` backend: path quantities of the network that dynamo captures.

    handle = fxpath.backend()                       # input shape taken from the first call
    compiled = torch.compile(model.eval(), backend=handle, fullgraph=True)
    compiled(x)                                     # analyses the graph, then runs it
    handle.path_norm(), handle.path_magnitude()     # keyed by the model's state_dict names

On the first graph dynamo hands it, the backend rebuilds the network as a `torch.fx.GraphModule`
whose parameters and buffers are the model's own tensors under their state_dict names (dynamo
passes them as graph inputs), compiles it with `fxpath.compile` and keeps the `PathProgram`; it
then returns the graph compiled by ``compiler`` (inductor by default, ``"eager"`` runs it as
captured), so the model runs as ``torch.compile`` would run it. The name ``"fxpath"`` is also
registered with dynamo (the package's ``torch_dynamo_backends`` entry point, so without importing
fxpath first, and `register`): ``torch.compile(model, backend="fxpath")`` uses the handle
`registered`, where the quantities are read::

    compiled = torch.compile(model.eval(), backend="fxpath", fullgraph=True)
    compiled(x)
    from fxpath.apps.backend import registered
    registered.path_norm(), registered.path_magnitude()

``options={"compiler": "eager"}`` (in ``torch.compile`` or on a handle) chooses what runs the
model; ``torch._dynamo.reset()`` also resets the handles it used.

A graph break splits the network into several graphs, none of which is the whole model: the
handle then raises `FxPathError` asking for ``fullgraph=True``.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArgumentError, FxPathError
from fxpath.program import PathProgram
from fxpath.quantities.results import PathMetric, PathNorm

__all__ = ["PathBackend", "backend", "compile_registered", "network_module", "register",
           "registered", "state_name"]

#: dynamo's placeholder names for module state: ``L_self_modules_conv1_parameters_weight_``
_MARK = re.compile(r"_(modules|parameters|buffers)_")

_GRAPH_BREAK = ("torch.compile captured {n} graphs: a graph break splits the network, and no "
                "graph holds all of it. fxpath analyses one whole network: compile with "
                "torch.compile(model, backend=handle, fullgraph=True), which names the break, "
                "and remove it (or use fxpath.compile(model, input_shape) directly). A handle "
                "serves one model: call handle.reset() before compiling another")


def state_name(placeholder: str) -> tuple[str, str] | None:
    """``(state_dict name, "parameters" | "buffers")`` of a dynamo placeholder that stands for
    module state, ``None`` for a user input: ``L_self_modules_layer1_modules_0_modules_conv1_
    parameters_weight_`` -> ``("layer1.0.conv1.weight", "parameters")``."""
    parts = _MARK.split("_" + placeholder.strip("_"))
    if len(parts) < 3 or parts[-2] not in ("parameters", "buffers"):
        return None
    return ".".join(parts[2::2]), parts[-2]


def _holder(names: Mapping[str, tuple[str, Tensor]]) -> nn.Module:
    """A module tree holding ``tensors`` (the model's own objects) under their state_dict
    names."""
    root = nn.Module()
    for name, (kind, tensor) in names.items():
        *path, leaf = name.split(".")
        mod = root
        for p in path:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        if kind == "parameters" and isinstance(tensor, nn.Parameter):
            mod.register_parameter(leaf, tensor)
        else:
            mod.register_buffer(leaf, tensor)
    return root


def _eval_function(graph: fx.Graph) -> None:
    """Make the captured graph its eval-mode function, as `fxpath.compile` analyses a model in
    train mode: BatchNorm with running statistics, dropout off."""
    F = torch.nn.functional
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        if n.target is F.batch_norm and len(n.args) > 5 and n.args[5] is True \
                and n.args[1] is not None:
            n.args = (*n.args[:5], False, *n.args[6:])
        elif n.target is F.batch_norm and n.kwargs.get("training") and n.args[1] is not None:
            n.kwargs = {**n.kwargs, "training": False}
        elif n.target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                          F.feature_alpha_dropout):
            n.kwargs = {**n.kwargs, "training": False}
            n.args = n.args[:2]


def network_module(gm: fx.GraphModule, example_inputs: Sequence[Any]
                   ) -> tuple[fx.GraphModule, list[tuple[int, ...]], frozenset[str]]:
    """The captured graph as a module over the model's own tensors.

    Returns ``(module, per-sample input shapes, state_dict names)``: each placeholder that
    stands for a parameter or buffer becomes a ``get_attr`` of its state_dict name, the others
    stay inputs.

    Raises:
        FxPathError: an input that is not a tensor (a symbolic size: dynamic shapes), or a
            state name that two placeholders share.
    """
    graph = copy.deepcopy(gm.graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    state: dict[str, tuple[str, Tensor]] = {}
    shapes: list[tuple[int, ...]] = []
    for node, value in zip(placeholders, example_inputs):
        found = state_name(str(node.target))
        if found is None:
            if not isinstance(value, Tensor):
                raise FxPathError(f"the captured graph takes a non-tensor input {node.target} "
                                  f"({type(value).__name__}: dynamic shapes?); compile with "
                                  "torch.compile(..., dynamic=False)")
            shapes.append(tuple(int(d) for d in value.shape[1:]))
            continue
        name, kind = found
        if name in state and state[name][1] is not value:
            raise FxPathError(f"two graph inputs claim the state_dict name {name!r}")
        state[name] = (kind, value)
        with graph.inserting_before(node):
            attr = graph.get_attr(name)
        node.replace_all_uses_with(attr)
        graph.erase_node(node)
    _eval_function(graph)
    graph.lint()
    return fx.GraphModule(_holder(state), graph, "CapturedNetwork"), shapes, frozenset(state)


def _compiler_option(default: str | Callable[..., Any], options: Mapping[str, Any] | None,
                     mode: str | None) -> str | Callable[..., Any]:
    """What runs the model: ``options["compiler"]`` when given, else ``default``."""
    if mode is not None:
        raise ArgumentError(f"torch.compile(mode={mode!r}) does not apply to the fxpath backend: "
                            "choose what runs the model with options={'compiler': NAME} "
                            "(\"inductor\", the default, or \"eager\")")
    options = dict(options or {})
    compiler = options.pop("compiler", default)
    if options:
        raise ArgumentError(f"unknown option(s) {sorted(options)} for the fxpath backend: the "
                            "one option is 'compiler' (a torch.compile backend name or callable, "
                            "or \"eager\")")
    if not (callable(compiler) or isinstance(compiler, str)):
        raise ArgumentError(f"compiler must be a torch.compile backend name or callable, "
                            f"got {compiler!r}")
    return compiler


def _runner(compiler: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(compiler):
        return compiler
    if compiler == "eager":
        return lambda gm, example_inputs: gm.forward
    from torch._dynamo import lookup_backend

    try:
        return lookup_backend(compiler)
    except Exception as exc:
        raise ArgumentError(f"unknown torch.compile backend {compiler!r} for running the "
                            f"model: {exc}") from exc


class PathBackend:
    """A ``torch.compile`` backend that also gives the path quantities of the captured network.

    Pass it as ``backend=`` (see the module docstring). The quantities are those of
    `PathProgram` on the model's live parameters; they are available once the compiled model
    has been called. One handle serves one model: `reset` before compiling another.
    """

    def __init__(self, input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
                 compiler: str | Callable[..., Any] = "inductor",
                 dtype: torch.dtype | None = None, fold_bn: bool = True,
                 front_end: str = "fx") -> None:
        if not (callable(compiler) or isinstance(compiler, str)):
            raise ArgumentError(f"compiler must be a torch.compile backend name or callable, "
                                f"got {compiler!r}")
        self.input_shape = input_shape
        self.compiler = compiler
        self.options = {"dtype": dtype, "fold_bn": fold_bn, "front_end": front_end}
        self.reset()

    def reset(self) -> None:
        """Forget what was captured (to compile another model with this handle)."""
        self._graphs: list[frozenset[str]] = []
        self._program: PathProgram | None = None
        self._error: FxPathError | None = None
        self.module: fx.GraphModule | None = None

    @property
    def graphs(self) -> int:
        """How many distinct graphs dynamo captured (1 without a graph break)."""
        return len(self._graphs)

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any], *,
                 options: Mapping[str, Any] | None = None,
                 mode: str | None = None) -> Callable[..., Any]:
        """dynamo's backend call: analyse the first graph, then compile it with ``compiler``
        (or ``options["compiler"]``, from ``torch.compile(..., options=...)``).

        Raises:
            ArgumentError: an option other than ``compiler``, or a ``mode`` (inductor's modes
                apply to ``backend="inductor"`` only).
        """
        compiler = _compiler_option(self.compiler, options, mode)
        names = frozenset(found[0] for n in gm.graph.nodes if n.op == "placeholder"
                          and (found := state_name(str(n.target))) is not None)
        # the same state again is a recompilation (another batch size, dynamic shapes), not a
        # graph break: the graph is the same network
        if names not in self._graphs:
            self._graphs.append(names)
            if len(self._graphs) == 1:
                self._analyse(gm, example_inputs)
        return _runner(compiler)(gm, example_inputs)

    def _analyse(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> None:
        try:
            module, shapes, _ = network_module(gm, example_inputs)
            self.module = module
            shape: Any = self.input_shape
            if shape is None:
                shape = shapes[0] if len(shapes) == 1 else shapes
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*analysed through torch.export.*")
                self._program = PathProgram(module, shape, **self.options)
        except FxPathError as exc:  # the model still runs; the quantities raise it
            self._error = exc

    @property
    def program(self) -> PathProgram:
        """The `PathProgram` of the captured network.

        Raises:
            FxPathError: nothing captured yet, a graph break, or the network's own refusal
                (`UnsupportedModelError`, ...).
        """
        if not self._graphs:
            raise FxPathError("nothing captured yet: call the model compiled with this backend "
                              "once (torch.compile compiles on the first call)")
        if len(self._graphs) > 1:
            raise FxPathError(_GRAPH_BREAK.format(n=len(self._graphs)))
        if self._error is not None:
            raise self._error
        assert self._program is not None
        return self._program

    def path_norm(self, q: float = 1.0) -> PathNorm:
        """The l^q path-norm of the captured network (`PathProgram.path_norm`)."""
        return self.program.path_norm(q)

    def path_magnitude(self, **kwargs: Any) -> dict[str, Tensor]:
        """Path-magnitude scores keyed by the model's state_dict names
        (`PathProgram.path_magnitude`)."""
        return self.program.path_magnitude(**kwargs)

    def path_metric(self, other: nn.Module | Mapping[str, Tensor]) -> PathMetric:
        """The l^1 path-metric to another parameter set: a state dict of the model, or the
        model itself (`PathProgram.path_metric`)."""
        program = self.program
        if isinstance(other, nn.Module):
            other = other.state_dict()
        if isinstance(other, Mapping):  # the graph holds the state it reads, no more
            held = program.model.state_dict()
            other = {k: v for k, v in other.items() if k in held}
        return program.path_metric(other)


def backend(input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None, *,
            compiler: str | Callable[..., Any] = "inductor", dtype: torch.dtype | None = None,
            fold_bn: bool = True, front_end: str = "fx") -> PathBackend:
    """A ``torch.compile`` backend handle that analyses the captured network.

    Args:
        input_shape: per-sample input shape(s); default: the first call's input without its
            batch dimension.
        compiler: what runs the model: a ``torch.compile`` backend name (``"inductor"``, the
            default) or callable, or ``"eager"`` (the captured graph as it is).
        dtype, fold_bn, front_end: as in `fxpath.compile`.

    Example:
        >>> handle = fxpath.backend(compiler="eager")
        >>> compiled = torch.compile(model.eval(), backend=handle, fullgraph=True)
        >>> compiled(x); handle.path_norm().log10
    """
    register()
    return PathBackend(input_shape, compiler=compiler, dtype=dtype, fold_bn=fold_bn,
                       front_end=front_end)


#: the handle behind ``torch.compile(model, backend="fxpath")``: its path quantities are read
#: here (inductor runs the model unless ``options={"compiler": ...}``; ``registered.reset()``
#: or ``torch._dynamo.reset()`` before compiling another model)
registered = PathBackend()


def compile_registered(gm: fx.GraphModule, example_inputs: Sequence[Any], *,
                       options: Mapping[str, Any] | None = None,
                       mode: str | None = None) -> Callable[..., Any]:
    """The backend named ``"fxpath"``: `registered` (the package's ``torch_dynamo_backends``
    entry point, so the name works without importing fxpath first).

    Raises:
        ArgumentError: as `PathBackend.__call__` (an unknown option, a ``mode``).
    """
    return registered(gm, example_inputs, options=options, mode=mode)


# torch._dynamo.reset() resets the backends it cached (their ``reset``): forget the graph too
compile_registered.reset = registered.reset  # type: ignore[attr-defined]


def register() -> None:
    """Register the name ``"fxpath"`` with dynamo (needed only where the package's entry point
    is not installed; `backend` calls it). Imports ``torch._dynamo`` (about a second)."""
    from torch._dynamo import list_backends, register_backend

    if "fxpath" not in list_backends(exclude_tags=()):
        register_backend(compile_registered, name="fxpath")
