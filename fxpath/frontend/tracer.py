"""The torch.fx front end: trace a model at one concrete input shape.

`trace(model, input_shapes)` runs `torch.fx` symbolic tracing with a twist: every proxy carries
a meta-device tensor (``node.meta["val"]``) computed as the trace goes, so shapes are known on
every node and Python control flow on shapes (``if x.shape[-1] < 7``,
``x.view(x.size(0), -1)``) takes the branch the real input would. Nothing runs on real data.

timm's own FX registrations decide which timm modules are leaves and which functions are
auto-wrapped. timm marks modules notrace because plain symbolic tracing cannot follow their
shape-dependent code; with concrete shapes fxpath can, so a timm leaf without an fxpath rule is
traced through instead of refused.
"""

from __future__ import annotations

import copy
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.node import map_arg
from torch.nn.utils import parametrize

from fxpath.errors import TraceError
from fxpath.validate import check_input_count

__all__ = ["TRACE_BATCH", "trace", "where"]

#: Batch size of the fake input used while tracing. Two, not one, so that the batch dimension
#: cannot be confused with a squeezable size-1 dimension.
TRACE_BATCH = 2

_CONCRETE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout"})
_CONCRETE_METHODS = frozenset({"size", "dim", "numel", "nelement", "get_device", "ndimension"})


def _timm_notrace() -> tuple[tuple[type, ...], tuple[Any, ...]]:
    try:
        from timm.layers import _fx as timm_fx
    except ImportError:  # timm is optional for user models
        return (), ()
    return tuple(timm_fx.get_notrace_modules()), tuple(timm_fx.get_notrace_functions())


class _ShapedProxy(fx.Proxy):
    """A proxy that answers shape questions with concrete values from its meta tensor."""

    def __getattr__(self, k: str) -> Any:
        val = self.node.meta.get("val")
        if isinstance(val, torch.Tensor):
            if k in _CONCRETE_ATTRS:
                return getattr(val, k)
            if k in _CONCRETE_METHODS:
                return getattr(val, k)
        return super().__getattr__(k)

    def __len__(self) -> int:
        val = self.node.meta.get("val")
        if val is None:
            raise TraceError(f"len() of {self.node.format_node()} is unknown while tracing")
        return len(val)

    def __iter__(self):  # type: ignore[override]
        val = self.node.meta.get("val")
        if isinstance(val, (tuple, list)):
            return iter([self[i] for i in range(len(val))])
        return super().__iter__()


class _Tracer(fx.Tracer):
    """fx.Tracer that shadows every node with a meta tensor (shapes and dtypes, no data)."""

    def __init__(self, inputs: Sequence[torch.Tensor],
                 has_rule: Callable[[torch.nn.Module], bool]) -> None:
        notrace_modules, notrace_functions = _timm_notrace()
        super().__init__(autowrap_functions=notrace_functions)
        self._notrace_modules = notrace_modules
        self._has_rule = has_rule
        self._inputs = list(inputs)
        self._fake_attrs: dict[str, Any] = {}
        self._running_fake = False
        self._twins: dict[str, torch.nn.Module] = {}
        self._param_names: dict[int, str] = {}
        self._attr_names: dict[int, str] = {}
        self._attr_nodes: dict[str, fx.Node] = {}

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001 - fx's signature
        if self._running_fake:  # a leaf module runs on fake tensors: no nodes inside it
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # noqa: ANN001 - fx's signature
        if self._running_fake:  # parameters read inside a leaf module stay real tensors
            return attr_val
        if isinstance(attr_val, torch.nn.Parameter):  # O(1) name lookup (fx scans the model)
            name = self._param_names.get(id(attr_val))
            if name is not None:
                if name not in parameter_proxy_cache:
                    parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
                return parameter_proxy_cache[name]
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_arg(self, a: Any) -> Any:
        # parameters and buffers by identity in O(1) (fx scans the whole model per argument)
        if isinstance(a, torch.Tensor) and id(a) in self._attr_names:
            name = self._attr_names[id(a)]
            if name not in self._attr_nodes:
                self._attr_nodes[name] = self.create_node("get_attr", name, (), {})
            return self._attr_nodes[name]
        return super().create_arg(a)

    def trace(self, root, concrete_args=None):  # noqa: ANN001 - fx's signature
        if isinstance(root, torch.nn.Module):
            self._param_names = {id(p): n for n, p in root.named_parameters()}
            self._attr_names = {**{id(b): n for n, b in root.named_buffers()},
                                **self._param_names}
        return super().trace(root, concrete_args)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if self._notrace_modules and isinstance(m, self._notrace_modules):
            # timm marks these as leaves because plain symbolic tracing cannot follow their
            # shape-dependent control flow; with concrete shapes we can, so a timm leaf that
            # fxpath has no rule for is traced through instead of refused.
            return self._has_rule(m)
        if parametrize.is_parametrized(m) or isinstance(m, parametrize.ParametrizationList):
            return False  # its parametrized tensors are computed in the graph
        return super().is_leaf_module(m, module_qualified_name)

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ShapedProxy(node, self)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):  # noqa: ANN001
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind == "output":
            return node
        try:
            node.meta["val"] = self._fake_value(node)
        except Exception as exc:  # report where it broke, with the model's own module path
            raise TraceError(
                f"could not propagate shapes through {node.format_node()} at {where(node)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return node

    def _fake_value(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            if not self._inputs:
                return node.args[0] if node.args else None
            return self._inputs.pop(0)
        self._running_fake = True
        try:
            if node.op == "get_attr":
                return self._fake_attr(str(node.target))
            args = map_arg(node.args, lambda n: n.meta.get("val"))
            kwargs = map_arg(node.kwargs, lambda n: n.meta.get("val"))
            return self._run_fake(node, args, kwargs)
        finally:
            self._running_fake = False

    def _run_fake(self, node: fx.Node, args: Any, kwargs: Any) -> Any:
        if (node.op, node.target) in _INDEX_TENSOR_OPS:
            args, kwargs = self._real_indices(node, args, kwargs)
        first = args[0] if args else None
        if isinstance(first, torch.Tensor) and _preserves_shape(self.root, node):
            return torch.empty_like(first)  # elementwise: skip meta kernels (BN decomposes)
        if node.op == "call_function" and node.target in (torch.cat, torch.concat):
            return _meta_cat(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "call_module":
            return self._meta_twin(str(node.target)).forward(*args, **kwargs)
        return None

    def _real_indices(self, node: fx.Node, args: Any, kwargs: Any) -> tuple[Any, Any]:
        """``tensor_split`` reads an indices tensor's values on the CPU: a constant or buffer
        passed as its indices is given as the real tensor, not the meta one."""
        def real(a: Any, fake: Any) -> Any:
            if isinstance(a, fx.Node) and a.op == "get_attr" and isinstance(fake, torch.Tensor):
                obj: Any = self.root
                for part in str(a.target).split("."):
                    obj = getattr(obj, part)
                return obj.detach().cpu()
            return fake
        args = (*args[:1], *(real(a, f) for a, f in zip(node.args[1:], args[1:])))
        return args, {k: real(node.kwargs[k], v) for k, v in kwargs.items()}

    def _meta_twin(self, target: str) -> torch.nn.Module:
        """A shallow copy of a leaf module whose tensors are meta tensors (no data copied)."""
        if target not in self._twins:
            self._twins[target] = _twin(self.root.get_submodule(target), target, self._fake_attr)
        return self._twins[target]

    def _fake_attr(self, target: str) -> Any:
        if target not in self._fake_attrs:
            obj: Any = self.root
            for part in target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                obj = obj.detach().to("meta")
            self._fake_attrs[target] = obj
        return self._fake_attrs[target]


_SAME_SHAPE_MODULES = frozenset({
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.ReLU,
    torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.Hardtanh, torch.nn.Identity, torch.nn.Dropout,
    torch.nn.Dropout2d, torch.nn.SiLU, torch.nn.GELU, torch.nn.Sigmoid, torch.nn.Hardswish})
_SAME_SHAPE_FUNCTIONS = frozenset({F.batch_norm, F.relu, torch.relu, F.relu6, F.dropout,
                                   F.silu, F.gelu, torch.sigmoid, F.hardswish})


#: Ops that read the values of an index tensor argument (impossible on the meta device).
_INDEX_TENSOR_OPS = (("call_function", torch.tensor_split),
                     ("call_function", torch.Tensor.tensor_split), ("call_method", "tensor_split"))


def _meta_cat(tensors: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
    """Output of ``torch.cat`` on meta tensors without the (slow, Python) meta kernel."""
    first = tensors[0]
    dim = dim % first.dim()
    if any(t.dim() != first.dim() or t.dtype != first.dtype or
           t.shape[:dim] + t.shape[dim + 1:] != first.shape[:dim] + first.shape[dim + 1:]
           for t in tensors):
        return torch.cat(list(tensors), dim)  # let torch raise its own error
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return first.new_empty(shape)


def _preserves_shape(root: torch.nn.Module, node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(root.get_submodule(str(node.target))) in _SAME_SHAPE_MODULES
    return node.op == "call_function" and node.target in _SAME_SHAPE_FUNCTIONS


def _twin(module: torch.nn.Module, prefix: str,
          meta: Callable[[str], Any]) -> torch.nn.Module:
    twin = copy.copy(module)
    path = f"{prefix}." if prefix else ""
    twin._parameters = {k: None if v is None else meta(path + k)
                        for k, v in module._parameters.items()}
    twin._buffers = {k: None if v is None else meta(path + k)
                     for k, v in module._buffers.items()}
    twin._modules = {k: None if v is None else _twin(v, path + k, meta)
                     for k, v in module._modules.items()}
    return twin


def where(node: fx.Node) -> str:
    """The model's module path for an fx node (``layer1.0.conv1``), for error messages.

    Never raises: it runs inside error handlers.
    """
    if node.op in ("call_module", "get_attr"):
        return str(node.target)
    return _innermost_module(node.meta.get("nn_module_stack"))


def _innermost_module(stack: Any) -> str:
    """The innermost module path of an fx module stack (``{key: (path, type)}``)."""
    try:
        path = list(stack.values())[-1][0] if stack else ""
    except (AttributeError, IndexError, KeyError, TypeError):
        return "<model>"
    return str(path) if path else "<model>"


def _model_frame(exc: BaseException) -> str:
    """``file:line in fn: code`` of the innermost traceback frame outside torch and fxpath."""
    skip = tuple(os.path.dirname(f) + os.sep for f in (torch.__file__, __file__))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}{code}"


def _fake_inputs(input_shapes: Sequence[Sequence[int]], dtype: torch.dtype) -> list[torch.Tensor]:
    try:
        return [torch.empty((TRACE_BATCH, *shape), dtype=dtype, device="meta")
                for shape in input_shapes]
    except Exception as exc:
        raise TraceError(f"invalid input shapes {[tuple(s) for s in input_shapes]}: "
                         f"{type(exc).__name__}: {exc}") from exc


def trace(model: torch.nn.Module, input_shapes: Sequence[Sequence[int]],
          dtype: torch.dtype | None = None,
          has_rule: Callable[[torch.nn.Module], bool] = lambda m: False) -> fx.GraphModule:
    """Trace ``model`` at the given per-sample input shapes; every node gets ``meta["val"]``.

    Returns a GraphModule (use `trace_graph` for the graph alone: no module copy, no Python
    code generation, which is most of the cost of a GraphModule on large models).
    """
    graph = trace_graph(model, input_shapes, dtype, has_rule)
    try:
        return fx.GraphModule(graph.owning_module, graph, type(model).__name__)
    except Exception as exc:
        raise TraceError(f"torch.fx could not build a GraphModule of {type(model).__name__}: "
                         f"{type(exc).__name__}: {exc}") from exc


def trace_graph(model: torch.nn.Module, input_shapes: Sequence[Sequence[int]],
                dtype: torch.dtype | None = None,
                has_rule: Callable[[torch.nn.Module], bool] = lambda m: False) -> fx.Graph:
    """`trace` without building a GraphModule: the fx graph, whose ``owning_module`` is ``model``.

    Args:
        model: the model, in eval mode.
        input_shapes: one per-sample shape (no batch dimension) per model input.
        dtype: dtype of the fake inputs (default: the model's first floating parameter's).
        has_rule: whether the lowering has a rule for a module (timm leaves without one are
            traced through).

    Raises:
        ArgumentError: fewer shapes than the forward's required inputs, or more than it names
            (`fxpath.validate.check_input_count`).
        TraceError: the model cannot be traced symbolically; the message names the op (the
            model's source line) and the module it sits in.
    """
    check_input_count(model, len(input_shapes))
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.get_default_dtype())
    tracer = _Tracer(_fake_inputs(input_shapes, dtype), has_rule)
    try:
        graph = tracer.trace(model)
    except TraceError:
        raise
    except Exception as exc:
        shapes = ", ".join(str(tuple(s)) for s in input_shapes)
        # fx leaves the modules it was inside of on its stack when a forward raises
        module = _innermost_module(getattr(tracer, "module_stack", None))
        frame = _model_frame(exc)
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__} at input shape {shapes}: "
            f"{type(exc).__name__}: {exc} (at {module}{', ' + frame if frame else ''}). fxpath "
            "traces with concrete shapes: a forward that branches on tensor values, or that "
            "rejects this input shape, cannot be traced."
        ) from exc
    graph.owning_module = tracer.root
    return graph
