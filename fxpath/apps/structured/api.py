"""`prune_channels` and `certify_channels`: structured pruning through Torch-Pruning, ranked by
channel path mass and certified exactly."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.apps.rescale import copy_model
from fxpath.apps.structured.ledger import Ledger
from fxpath.apps.structured.library import torch_pruning
from fxpath.apps.structured.mass import ChannelMass, group_mass, output_layers
from fxpath.apps.structured.report import ChannelCertificate, StructuredReport
from fxpath.apps.structured.twin import check_twin, zeroed_twin
from fxpath.errors import ArgumentError, FxPathError
from fxpath.program import PathProgram
from fxpath.validate import as_input_shapes, check_model, check_steps, compute_dtype, eval_mode

__all__ = ["certify_channels", "prune_channels"]

SCOPES = ("global", "layer")
_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
Shape = Sequence[int] | Sequence[Sequence[int]]


def prune_channels(model: nn.Module, amount: float, input_shape: Shape, *,
                   criterion: str = "path_magnitude", scope: str = "global", steps: int = 1,
                   ignored_layers: Iterable[str | nn.Module] = (), round_to: int | None = None,
                   dtype: torch.dtype | None = None) -> tuple[nn.Module, StructuredReport]:
    """Remove a fraction of the channels of ``model``: a new, physically smaller model and the
    exact certificate of how far its outputs moved.

    Channels are ranked by ``criterion``; coupled channels (residual streams, concatenations,
    depthwise convs and their producers) are found and cut together by Torch-Pruning's
    dependency graph (``pip install "fxpath[prune]"``). The small model is proved equal, in
    float64 on random inputs, to the dense model with the removed neurons zeroed (weights,
    bias and BatchNorm shift), whose path-metric to the dense model is exact. The output
    layers and the input channels are never pruned; ``model`` is not changed.

    Args:
        model: a ReLU network (an ``nn.Module``).
        amount: fraction in [0, 1) of the prunable channels to remove.
        input_shape: per-sample input shape (a list of shapes for several inputs).
        criterion: ``"path_magnitude"`` (channel path mass: comparable across layers and
            invariant under rescaling), or Torch-Pruning's ``"l1"`` (filter L1 norm) or
            ``"bn_scale"`` (BatchNorm scale) for comparison.
        scope: ``"global"`` (one ranking over all layers) or ``"layer"`` (``amount`` of each).
        steps: prune-and-rescore rounds reaching ``amount`` together.
        ignored_layers: layers (module paths or modules of ``model``) never pruned.
        round_to: keep channel counts at multiples of this (8 for fast kernels).
        dtype: compute dtype of the path mass (default: the model's).

    Returns:
        ``(small_model, report)``: `StructuredReport` with channels per layer and group,
        parameters and MACs before and after, and ``report.metric`` (exact).

    Example:
        >>> small, report = fxpath.prune_channels(model.eval(), 0.5, (3, 224, 224))
        >>> report.macs, report.metric.relative, report.lipschitz_bound(images)
    """
    model = check_model(model, exported=False)
    amount, steps, criterion, scope, round_to = _check(amount, steps, criterion, scope, round_to)
    shapes = as_input_shapes(input_shape)
    if dtype is not None:
        compute_dtype([], dtype)  # the same check as compile's, before any work
    tp = torch_pruning()
    dense = PathProgram(model, shapes, dtype=torch.float64)  # refuses non-ReLU-DAGs
    ignored = _ignored(model, ignored_layers) | output_layers(dense.graph)
    small = copy_model(model)
    with eval_mode(small):
        inputs = _example_inputs(model, shapes)
        small, ledger = _cut(tp, small, inputs, shapes, amount, steps, criterion, scope,
                             ignored, round_to, dtype)
        certificate = _certify(dense, model, small, ledger, inputs)
        params, macs = _sizes(model, small, inputs)
    return small, StructuredReport(**vars(certificate), criterion=criterion, scope=scope,
                                   amount=amount, steps=steps, round_to=round_to,
                                   params=params, macs=macs, spared=ledger.spared)


def certify_channels(dense: nn.Module, pruned: nn.Module, history: Sequence[Any],
                     input_shape: Shape) -> ChannelCertificate:
    """Certify a model pruned by Torch-Pruning: replay ``history``
    (``pruner.pruning_history()``) on a copy of ``dense``, check that ``pruned`` equals the
    dense model with those channels zeroed, and return the exact path-metric between them.

    Example:
        >>> pruner.step()
        >>> cert = fxpath.certify_channels(dense, model, pruner.pruning_history(), (3, 32, 32))
        >>> cert.metric.exact, cert.lipschitz_bound(images)
    """
    dense = check_model(dense, exported=False)
    pruned = check_model(pruned, what="pruned", exported=False)
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)):
        raise ArgumentError(f"history must be the list pruner.pruning_history() returns, got "
                            f"{type(history).__name__}")
    shapes = as_input_shapes(input_shape)
    tp = torch_pruning()
    program = PathProgram(dense, shapes, dtype=torch.float64)
    replay = copy_model(dense)
    with eval_mode(replay):
        inputs = _example_inputs(dense, shapes)
        graph = _dependency_graph(tp, replay, inputs)
        ledger = Ledger(replay, graph)
        modules = dict(replay.named_modules())
        for entry in history:
            name, is_out, idxs = _entry(entry, modules)
            pruner = graph.get_pruner_of_module(modules[name])
            fn = pruner.prune_out_channels if is_out else pruner.prune_in_channels
            group = graph.get_pruning_group(modules[name], fn, idxs)
            ledger.record(group)
            _prune(group, ledger, record_history=False)
        return _certify(program, dense, pruned, ledger, inputs)


def _check(amount: Any, steps: Any, criterion: Any, scope: Any, round_to: Any
           ) -> tuple[float, int, str, str, int | None]:
    from fxpath.apps.structured.importance import CRITERIA

    if isinstance(amount, bool) or not isinstance(amount, numbers.Real) or not (
            0.0 <= float(amount) < 1.0):
        raise ArgumentError(f"amount must be a fraction in [0, 1) of the channels to remove "
                            f"(0.5 removes half), got {amount!r}")
    if criterion not in CRITERIA:
        raise ArgumentError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if scope not in SCOPES:
        raise ArgumentError(f"scope must be 'global' or 'layer', got {scope!r}")
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(
            round_to, numbers.Integral) or round_to < 1):
        raise ArgumentError(f"round_to must be None or an integer >= 1, got {round_to!r}")
    return float(amount), check_steps(steps), criterion, scope, (
        None if round_to is None else int(round_to))


def _ignored(model: nn.Module, layers: Iterable[str | nn.Module]) -> set[str]:
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, Iterable) or isinstance(layers, (bytes, Tensor, dict)):
        raise ArgumentError(f"ignored_layers must be a list of layer names or modules of the "
                            f"model, got {type(layers).__name__}")
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    out = set()
    for layer in layers:
        if isinstance(layer, nn.Module):
            if layer not in names:
                raise ArgumentError(f"ignored_layers: {type(layer).__name__} is not a module "
                                    f"of the model")
            out.add(names[layer])
        elif isinstance(layer, str) and layer in modules:
            out.add(layer)
        else:
            near = [n for n in modules if n and isinstance(layer, str) and layer in n][:3]
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ArgumentError(f"ignored_layers: {layer!r} is not a layer of the model{hint}")
    return out


def _example_inputs(model: nn.Module, shapes: Sequence[tuple[int, ...]]) -> list[Tensor]:
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    return [torch.randn((1, *s), generator=gen, dtype=torch.float64).to(device, dtype)
            for s in shapes]


def _dependency_graph(tp: Any, model: nn.Module, inputs: Sequence[Tensor]) -> Any:
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=_one(inputs),
                                                     verbose=False)
    except Exception as exc:  # the library's own failure, whatever its type
        raise FxPathError(f"Torch-Pruning cannot build the dependency graph of this model: "
                          f"{type(exc).__name__}: {exc}") from exc


def _one(inputs: Sequence[Tensor]) -> Tensor | tuple[Tensor, ...]:
    return inputs[0] if len(inputs) == 1 else tuple(inputs)


def _cut(tp: Any, small: nn.Module, inputs: Sequence[Tensor], shapes: Sequence[tuple[int, ...]],
         amount: float, steps: int, criterion: str, scope: str, ignored: set[str],
         round_to: int | None, dtype: torch.dtype | None) -> tuple[nn.Module, Ledger]:
    """Cut ``small`` in place with Torch-Pruning's pruner, recording every group."""
    from fxpath.apps.structured.importance import importance, out_channel_functions

    imp = importance(criterion, small, shapes, dtype)
    mass = imp.mass if criterion == "path_magnitude" else ChannelMass(small, shapes, dtype)
    modules = dict(small.named_modules())
    try:
        pruner = tp.pruner.BasePruner(
            small, _one(inputs), importance=_TieBreak(imp), global_pruning=scope == "global",
            pruning_ratio=amount, iterative_steps=steps, round_to=round_to,
            ignored_layers=[modules[n] for n in sorted(ignored)])
    except Exception as exc:  # the library's own failure, whatever its type
        raise FxPathError(f"Torch-Pruning cannot build the dependency graph of this model: "
                          f"{type(exc).__name__}: {exc}") from exc
    ledger = Ledger(small, pruner.DG)
    refused, spared = _guard(pruner, ledger.names, scope, round_to or 1)
    owners = out_channel_functions()
    for _ in range(steps):
        mass.frozen = False
        for group in pruner.step(interactive=True):
            # the masses of the model as this step found it: the step's groups are disjoint,
            # so their indices refer to it until the step ends
            mass.frozen = True
            removed = group_mass(group, mass.masses(), ledger.names, owners)
            ledger.record(group, None if removed is None else float(removed.sum()))
            _prune(group, ledger)
        mass.frozen = False
        if refused:
            raise ArgumentError(f"amount={amount:g} would remove every channel of layer "
                                f"{refused[0]} ({scope} scope, {criterion}); lower the "
                                f"amount or add the layer to ignored_layers")
    ledger.spared = tuple(dict.fromkeys(spared))
    return small, ledger


class _TieBreak:
    """An importance whose equal scores are told apart by channel order (then by group).

    Torch-Pruning's threshold cuts every channel whose score equals the k-th smallest, so tied
    scores (fresh BatchNorm scales are all 1) would cut far more than ``amount``. Scores are
    nudged by at most a few parts in 1e12 of their size: distinct scores keep their order."""

    def __init__(self, importance: Any) -> None:
        self.importance = importance
        self.calls = 0

    def __call__(self, group: Any) -> Tensor | None:
        scores = self.importance(group)
        if scores is None:
            return None
        scores = scores.to(torch.float64)
        finite = scores[torch.isfinite(scores)]
        size = float(finite.abs().max()) if finite.numel() else 1.0
        step = 1e-13 * (size if size > 0 else 1.0)
        self.calls += 1
        order = torch.arange(len(scores), dtype=torch.float64)
        return scores + step * (order / max(1, len(scores)) + self.calls / 1e3)


def _prune(group: Any, ledger: Ledger, **kwargs: Any) -> None:
    """``group.prune()``, with Torch-Pruning's own failures named by layer."""
    try:
        group.prune(**kwargs)
    except Exception as exc:  # the library's own failure, whatever its type
        layers = ", ".join(ledger.groups[-1].layers) if ledger.groups else "?"
        raise FxPathError(f"Torch-Pruning cannot cut the group rooted at "
                          f"{ledger.groups[-1].root if ledger.groups else '?'} (layers "
                          f"{layers}): {type(exc).__name__}: {exc}") from exc


def _guard(pruner: Any, names: dict[nn.Module, str], scope: str, keep: int
           ) -> tuple[list[str], list[str]]:
    """Torch-Pruning skips, silently, a group whose cut would empty a layer. Per layer that is
    an impossible request: recorded as refused. In a global ranking the layer keeps instead
    its ``keep`` best channels (by the same criterion), recorded as spared."""
    refused: list[str] = []
    spared: list[str] = []
    graph = pruner.DG
    check = graph.check_pruning_group

    def guarded(group: Any) -> bool:
        if check(group):
            return True
        name = names.get(group[0].dep.target.module, "?")
        trimmed = _keep_best(pruner, group, keep) if scope == "global" else None
        if trimmed is None or not check(trimmed):
            refused.append(name)
            return False
        group._group[:] = list(trimmed._group)  # the pruner cuts this very object next
        spared.append(name)
        return True

    graph.check_pruning_group = guarded
    return refused, spared


def _keep_best(pruner: Any, group: Any, keep: int) -> Any:
    """``group`` minus the ``keep`` best channels of its root (per channel group)."""
    graph = pruner.DG
    module, handler = group[0].dep.target.module, group[0].dep.handler
    count = (graph.get_out_channels(module) if graph.is_out_channel_pruning_fn(handler)
             else graph.get_in_channels(module))
    ch_groups = max(1, int(pruner._get_channel_groups(group)))
    size = int(count) // ch_groups
    if size <= keep:
        return None
    scores = pruner.estimate_importance(graph.get_pruning_group(module, handler,
                                                                list(range(int(count)))))
    if scores is None:
        return None
    dims = scores.reshape(ch_groups, size).mean(0)
    best = set(torch.topk(dims, keep).indices.tolist())
    asked = {int(i) % size for i in group[0].idxs}
    cut = sorted(d + g * size for d in asked - best for g in range(ch_groups))
    return graph.get_pruning_group(module, handler, cut) if cut else None


def _certify(program: PathProgram, dense: nn.Module, small: nn.Module, ledger: Ledger,
             inputs: Sequence[Tensor]) -> ChannelCertificate:
    """Build the zeroed twin, prove ``small`` equals it, and take the exact path-metric."""
    twin = zeroed_twin(dense, ledger.removed())
    gap = check_twin(small, twin, inputs, ledger.kept_out)
    metric = program.path_metric(twin)
    if not metric.exact:
        raise FxPathError("the zeroed twin is not dominated by the dense model (a removed "
                          "channel's parameters were changed, not zeroed): no exact certificate")
    modules = dict(dense.named_modules())
    removed = {n: tuple(sorted(c.out)) for n, c in ledger.removed().items()
               if c.out and isinstance(modules[n], _LAYERS)}
    channels = {n: (_out_channels(modules[n]), _out_channels(modules[n]) - len(r))
                for n, r in removed.items()}
    return ChannelCertificate(removed=removed, channels=channels, groups=tuple(ledger.groups),
                              metric=metric, twin_gap=gap)


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    return int(module.out_channels)  # type: ignore[arg-type]


def _sizes(dense: nn.Module, small: nn.Module, inputs: Sequence[Tensor]
           ) -> tuple[tuple[int, int], tuple[int, int]]:
    """(dense, small) parameter counts and multiply-accumulates of one sample (torch's own
    FLOP counter: a multiply-add counts 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    one = [x[:1] for x in inputs]
    macs = []
    for model in (dense, small):
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(*one)
        macs.append(counter.get_total_flops() // 2)
    params = [sum(p.numel() for p in m.parameters()) for m in (dense, small)]
    return (params[0], params[1]), (int(macs[0]), int(macs[1]))


def _entry(entry: Any, modules: dict[str, nn.Module]) -> tuple[str, bool, list[int]]:
    try:
        name, is_out, idxs = entry
        idxs = [int(i) for i in idxs]
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"history entries must be [layer name, is_out_channel, indices] "
                            f"as pruner.pruning_history() gives them, got {entry!r}") from exc
    if name not in modules:
        raise ArgumentError(f"history names layer {name!r}, which is not in the dense model")
    return str(name), bool(is_out), idxs
