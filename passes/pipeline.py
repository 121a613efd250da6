"""The normalization pipeline: traced IR -> ReLU-DAG IR that the code generator accepts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

from fxpath.passes.check_supported import check_supported
from fxpath.passes.eliminate_dead_nodes import eliminate_dead_nodes
from fxpath.passes.fold_batchnorm import fold_batchnorm
from fxpath.passes.frame_convs import frame_convs
from fxpath.passes.lower_pooling import lower_pooling
from fxpath.passes.remove_identities import remove_identities
from fxpath.passes.rewrite_activations import rewrite_activations
from fxpath.passes.select_outputs import select_outputs

from fxpath.errors import FxPathError, UnsupportedModelError, UnsupportedOp
from fxpath.ir.graph import Graph
from fxpath.ops.verify import check_ops, verify

Pass = Callable[[Graph], Graph]

#: The passes, in order. Each line says why it sits where it does.
PIPELINE: tuple[tuple[str, Pass], ...] = (
    # first: refuse non-ReLU-DAG models before any work, listing every offending op
    ("check_supported", check_supported),
    # only when asked for (output=): before dead-node elimination, which drops what feeds the
    # other outputs only, and before folding, which then sees the selected model's users
    ("select_outputs", select_outputs),
    # drop dropout/identity early so that BatchNorm sees its real producer
    ("remove_identities", remove_identities),
    # unused branches (aux heads not returned) carry no path to the output
    ("eliminate_dead_nodes", eliminate_dead_nodes),
    # before folding: a BatchNorm's producer must have the BN as its only user
    ("fold_batchnorm", fold_batchnorm),
    # exact ReLU rewrites; after folding so the rewrite never separates a conv from its BN
    ("rewrite_activations", rewrite_activations),
    # pooling coefficients need the final input shapes only
    ("lower_pooling", lower_pooling),
    # last, and only when asked for (a code-generation choice, per device): the frame
    # analysis needs the final graph
    ("frame_convs", frame_convs),
)


def _run_pass(name: str, p: Pass, graph: Graph) -> Graph:
    """``p(graph)``; a raw exception becomes an `UnsupportedModelError` naming the pass.

    Node rules already name their node (`passes._rebuild.rebuild`); this catches the rest.
    """
    try:
        return p(graph)
    except FxPathError:
        raise
    except Exception as exc:
        raise UnsupportedModelError([UnsupportedOp(
            f"pass {name}", "", f"fxpath cannot normalize this model ({type(exc).__name__}: "
                                f"{exc})")]) from exc


def normalize(graph: Graph, *, fold_bn: bool = True, frame_min_macs: int | None = None,
              outputs: Sequence[str] | None = None, debug: bool = False) -> Graph:
    """Run the pipeline; the IR verifier checks the result, and every op of the lowering's
    output against its schema (`fxpath.ops`); with ``debug`` it runs after every pass.

    Args:
        graph: the IR produced by `fxpath.frontend.lower.fx.lower` (or `.aten.lower_exported`).
        fold_bn: fold frozen BatchNorm into its producing conv/linear where possible.
        frame_min_macs: rewrite convs of at least this many multiply-adds whose path-network
            input is nearly constant into ``frame_conv`` nodes (`frame_convs`); None: none.
        outputs: keep only the model outputs of these names (`select_outputs`); None: all.
        debug: verify the IR after each pass and name the pass that broke it.
    """
    ran: list[str] = []
    for name, p in PIPELINE:
        if name == "fold_batchnorm":
            p = partial(fold_batchnorm, fold=fold_bn)
        elif name == "frame_convs":
            if frame_min_macs is None:
                continue
            p = partial(frame_convs, min_macs=frame_min_macs)
        elif name == "select_outputs":
            if outputs is None:
                continue
            p = partial(select_outputs, names=tuple(outputs))
        graph = _run_pass(name, p, graph)
        ran.append(name)
        if debug:
            verify(graph, after=ran, final=False)
        elif name == "check_supported":  # the lowering's output, known to be supported
            check_ops(graph, after=ran)
    verify(graph, after=ran, final=True)
    return graph
