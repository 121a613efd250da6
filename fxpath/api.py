"""The one-call functions: each compiles a `PathProgram` and asks it one question."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fxpath.errors import ArgumentError, TraceError
from fxpath.frontend.build import Model, is_exported
from fxpath.program import PathProgram
from fxpath.quantities import generalization
from fxpath.quantities.generalization import GeneralizationBound
from fxpath.quantities.results import PathMetric, PathNorm
from fxpath.validate import batch_advice, check_batches, check_input_count, check_q, input_scale

__all__ = ["compile", "generalization_bound", "lipschitz_bound", "path_magnitude", "path_metric",
           "path_norm"]

Shape = Sequence[int] | Sequence[Sequence[int]]
#: ``output=``: the name of one model output (a dict key, a tuple index as a string), or a list
Output = str | Sequence[str] | None


def compile(model: Model, input_shape: Shape | None = None, *,  # noqa: A001
            dtype: torch.dtype | None = None, device: torch.device | str | None = None,
            fold_bn: bool = True, torch_compile: bool = False, cuda_graphs: bool | None = None,
            interior: bool | None = None, debug: bool = False,
            front_end: str = "fx", output: Output = None) -> PathProgram:
    """Trace, normalize and code-generate ``model`` once; returns a reusable `PathProgram`.

    Args:
        model: a ReLU network (torchvision, timm or your own), or a
            ``torch.export.ExportedProgram`` of one. A module is analysed as its eval-mode
            function (BatchNorm running statistics, Dropout off) whatever mode it is in; its
            mode is left as it was.
        input_shape: per-sample input shape without the batch dimension, ``(3, 224, 224)``;
            a list of shapes for several inputs. Optional for an ``ExportedProgram`` (its
            own inputs' shapes).
        dtype: compute dtype of the path network, ``torch.float32`` or ``torch.float64``.
            Default: the model's own, float64 for a float64 model, float32 otherwise
            (float16/bfloat16 models too: see ``docs/numerics.md``). Scale tracking keeps
            every value in range either way.
        device: where the path network runs (default: the model's device).
        fold_bn: fold frozen BatchNorm into the producing conv/linear (``docs/mathematics.md``).
        torch_compile: wrap the generated path networks in ``torch.compile`` (for repeated
            use, e.g. monitoring during training).
        cuda_graphs: replay repeated calls from CUDA graphs (one launch instead of hundreds
            of tiny kernels; the same kernels as eager). Default: on for a CUDA device unless
            ``torch_compile``.
        interior: convs whose path-network input is constant away from a thin border frame
            (zero padding of the all-ones input) run on a compressed image (same sums,
            `fxpath.kernels.frame_conv`). Default: every conv where it shrinks the work on the CPU;
            on a GPU only convs of at least 5e8 multiply-adds (batch-1 GPU convs are mostly
            launch-bound). ``True``: every conv where it shrinks the work; ``False``: none.
            Unless ``False``, convs also run their CPU backward (scores) on a compressed
            output gradient where it has a frame (`fxpath.kernels.grad_frame`).
        debug: verify the IR after every pass.
        front_end: ``"fx"`` (torch.fx tracing; torch.export is tried, with a warning, when
            tracing fails) or ``"export"`` (torch.export's ATen graph).
        output: which outputs of a model returning several (a dict, tuple or list) the
            program covers: ``None`` (default) all of them together, as one output layer; a
            name (``"aux"`` for ``{"out": ..., "aux": ...}``, ``"1"`` for a tuple's second
            item) or a list of names: only those, as if the model returned only them
            (``PathProgram.output_names`` lists them).

    Example:
        >>> prog = fxpath.compile(model.eval(), (3, 224, 224))
        >>> prog.path_norm().value, prog.path_norm(q=2).value
    """
    return PathProgram(model, input_shape, dtype=dtype, device=device, fold_bn=fold_bn,
                       torch_compile=torch_compile, cuda_graphs=cuda_graphs, interior=interior,
                       debug=debug, front_end=front_end, output=output)


def path_norm(model: Model, input_shape: Shape | None, q: float = 1.0, *,
              dtype: torch.dtype | None = None, fold_bn: bool = True,
              output: Output = None) -> PathNorm:
    """The l^q path-norm of ``model`` at ``input_shape`` (tracing included); ``output``: of
    the named outputs only (see `compile`).

    Example:
        >>> fxpath.path_norm(torchvision.models.resnet18().eval(), (3, 224, 224)).log10
    """
    q = check_q(q)
    return compile(model, input_shape, dtype=dtype, fold_bn=fold_bn,
                   output=output).path_norm(q)


def path_metric(model_a: Model, model_b: Model | Mapping[str, Tensor],
                input_shape: Shape | None, *, dtype: torch.dtype | None = None,
                output: Output = None) -> PathMetric:
    """The l^1 path-metric between two models of one architecture (exact or certified bound);
    ``output``: over the paths to the named outputs only (see `compile`).

    ``model_b`` is a model, an ``ExportedProgram`` or a state dict. Both must be the same
    network (same normalized layers, parameter names and shapes), else
    `ArchitectureMismatchError` names the first difference.

    Example:
        >>> d = fxpath.path_metric(dense, pruned, (3, 224, 224)); d.value, d.exact
    """
    return compile(model_a, input_shape, dtype=dtype, output=output).path_metric(model_b)


def lipschitz_bound(model_a: Model, model_b: Model | Mapping[str, Tensor],
                    x: Tensor | Sequence[Tensor], *, dtype: torch.dtype = torch.float64,
                    output: Output = None) -> Tensor:
    """Per-sample certified bound on ``||R_a(x_n) - R_b(x_n)||_1``: ``max(1, ||x_n||_inf) * d``.

    ``d`` is the l^1 path-metric of the two parameter sets (``docs/mathematics.md``); ``x`` is
    a finite batch ``(N, *input_shape)``, or for a model with several inputs a tuple (or list)
    with one batch per input of its forward, in order, all of ``N`` samples. Several inputs are
    one input vector to the bound: the network's input neurons are all of their entries, so
    ``||x_n||_inf`` is the l^inf norm of sample ``n``'s inputs concatenated, the largest
    ``|entry|`` over all of them. Computed in float64 by default: a certificate keeps all its
    digits. Returns a float64 tensor of shape ``(N,)`` (``inf`` entries only when ``d`` is
    beyond float64). ``R`` is every output of the model together (a segmentation model: every
    pixel of every map, the l^1 norm summing over all of them); ``output``: the named outputs
    only (see `compile`).

    Example:
        >>> bound = fxpath.lipschitz_bound(dense, pruned, images)
        >>> bound = fxpath.lipschitz_bound(dense, pruned, (images, metadata))  # two inputs
    """
    xs = check_batches(x)
    check_input_count(model_a, len(xs), what="x")
    shapes = [tuple(t.shape[1:]) for t in xs]
    try:
        with warnings.catch_warnings():  # x's own shape: a leading size is no batch by mistake
            warnings.filterwarnings("ignore", message=r"fxpath: input_shape .* first layer is")
            prog = compile(model_a, shapes, dtype=dtype, output=output)
    except ArgumentError as exc:  # input_shape advice, phrased for x (no input_shape given)
        advice = (batch_advice(model_a, xs[0]) if len(xs) == 1 and not is_exported(model_a)
                  and isinstance(exc.__cause__, TraceError) else None)
        if advice is None:
            raise
        raise ArgumentError(f"x of shape {tuple(xs[0].shape)} does not fit the model: "
                            f"{advice}") from exc
    d = prog.path_metric(model_b).value
    return input_scale(xs) * d


def path_magnitude(model: Model, input_shape: Shape | None, *,
                   dtype: torch.dtype | None = None, output: Output = None
                   ) -> dict[str, Tensor]:
    """Path-magnitude scores: the fraction of l^1 path mass through each parameter entry.

    Keys are state_dict names, values have the parameters' shapes and lie in [0, 1]. See
    `PathProgram.path_magnitude`; ``output``: of the paths to the named outputs only.

    Example:
        >>> scores = fxpath.path_magnitude(model.eval(), (3, 224, 224))
    """
    return compile(model, input_shape, dtype=dtype, output=output).path_magnitude()


def generalization_bound(model: Model, input_shape: Shape | None, n_train: int, *,
                         input_bound: float = 1.0, dtype: torch.dtype | None = None,
                         fold_bn: bool = True, output: Output = None) -> GeneralizationBound:
    """The path-norm generalization bound ``4 * C * B * ||Phi(theta)||_1 / sqrt(n)`` of a
    ReLU-DAG and its sharpened variant, with every ingredient named (``docs/generalization.md``).

    The depth ``D``, the largest max-pool window ``K``, the max-pooling types ``P``, the
    max-pools on one path ``M`` and the input/output neurons ``d_in``/``d_out`` are read from
    the normalized IR; the l^1 path-norm from the path network (as a log: it never overflows).

    Args:
        model: the network (see `compile`); a non-ReLU-DAG gets `UnsupportedModelError`.
        input_shape: per-sample input shape(s), as for `compile`.
        n_train: ``n``, the number of i.i.d. training samples (an integer >= 1).
        input_bound: ``B`` with ``||x||_inf <= B`` for every input (default 1.0: inputs in
            [-1, 1]; 2.64 for ImageNet after the usual normalization). The bound uses
            ``max(1, B)``: paths starting at a bias see the constant input 1.
        dtype, fold_bn, output: as for `path_norm`.

    Example:
        >>> r = fxpath.generalization_bound(torchvision.models.resnet18().eval(),
        ...                                 (3, 224, 224), 1268355, input_bound=2.64)
        >>> r.ingredients.depth, round(r.factor, 4), r.log10_bound  # 18, 0.0881, ...
        >>> print(r)
    """
    n = generalization.check_n_train(n_train)
    b = generalization.check_input_bound(input_bound)
    prog = compile(model, input_shape, dtype=dtype, fold_bn=fold_bn, output=output)
    return generalization.generalization_bound(prog, n, b)
