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

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch.fx.node import map_arg

from .errors import TraceError

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

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001 - fx's signature
        if self._running_fake:  # a leaf module runs on fake tensors: no nodes inside it
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # noqa: ANN001 - fx's signature
        if self._running_fake:  # parameters read inside a leaf module stay real tensors
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if self._notrace_modules and isinstance(m, self._notrace_modules):
            # timm marks these as leaves because plain symbolic tracing cannot follow their
            # shape-dependent control flow; with concrete shapes we can, so a timm leaf that
            # fxpath has no rule for is traced through instead of refused.
            return self._has_rule(m)
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
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "call_module":
            module = self.root.get_submodule(node.target)
            state = {k: self._fake_attr(f"{node.target}.{k}" if node.target else k)
                     for k, _ in _tensors(module)}
            return torch.func.functional_call(module, state, tuple(args), kwargs)
        return None

    def _fake_attr(self, target: str) -> Any:
        if target not in self._fake_attrs:
            obj: Any = self.root
            for part in target.split("."):
                obj = getattr(obj, part)
            if isinstance(obj, torch.Tensor):
                obj = obj.detach().to("meta")
            self._fake_attrs[target] = obj
        return self._fake_attrs[target]


def _tensors(module: torch.nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def where(node: fx.Node) -> str:
    """The model's module path for an fx node (``layer1.0.conv1``), for error messages."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "get_attr":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        return str(path) if path else "<model>"
    return "<model>"


def trace(model: torch.nn.Module, input_shapes: Sequence[Sequence[int]],
          dtype: torch.dtype | None = None,
          has_rule: Callable[[torch.nn.Module], bool] = lambda m: False) -> fx.GraphModule:
    """Trace ``model`` at the given per-sample input shapes; every node gets ``meta["val"]``.

    Args:
        model: the model, in eval mode.
        input_shapes: one per-sample shape (no batch dimension) per model input.
        dtype: dtype of the fake inputs (default: the model's first floating parameter's).
        has_rule: whether the lowering has a rule for a module (timm leaves without one are
            traced through).

    Raises:
        TraceError: the model cannot be traced symbolically; the message names the op.
    """
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                     torch.get_default_dtype())
    inputs = [torch.empty((TRACE_BATCH, *shape), dtype=dtype, device="meta")
              for shape in input_shapes]
    tracer = _Tracer(inputs, has_rule)
    try:
        graph = tracer.trace(model)
    except TraceError:
        raise
    except Exception as exc:
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. "
            "fxpath needs a model whose forward only branches on shapes, not on tensor values."
        ) from exc
    return fx.GraphModule(tracer.root, graph, type(model).__name__)
