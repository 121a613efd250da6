"""The IR op registry: each op of `fxpath.ir.graph` is defined once, in one module of this package.

An `Op` holds the op's attribute schema and its rules: how the code generator emits it
(`path_rule`), what it computes in the model (`interpret_rule`), its constant-interior frame
(`frame_rule`), how neuron rescaling crosses it (`rescale_rule`) and its coordinates
(`slots_rule`); an op that exists only before normalization names the pass that removes it
(`lowered_by`). Interpreters walk the graph with `fxpath.ops.walk.walk`, which looks each
node's rule up; none holds a per-op branch. Each family module keeps the `Op` it registers
as a handle (``fxpath.ops.linear.LINEAR``): compare ``fxpath.ops.core.op_of(node)`` with it.

Families: `fxpath.ops.io` (input, output), `fxpath.ops.linear` (linear, frame_conv, affine),
`fxpath.ops.elementwise` (relu, add), `fxpath.ops.pool` (pool), `fxpath.ops.resample`
(resample: interpolation), `fxpath.ops.reindex` (reshape, concat), `fxpath.ops.scale` (scale:
multiplication by, and addition of, model tensors), `fxpath.ops.pre_norm` (the ops
normalization rewrites away). The table in ``docs/ops.md`` is generated from the registry:
``python -m fxpath.ops``.

Example:
    >>> fxpath.ops.get("relu").rescale_rule.summary
    'passes: channel ids unchanged'
"""

from fxpath.ops import elementwise, io, linear, pool, pre_norm, reindex, resample, scale
from fxpath.ops.core import (
           REGISTRY,
           RULES,
           Attr,
           Coordinates,
           NotApplicable,
           Op,
           Rescaling,
           RunContext,
           does_not_apply,
           get,
           register,
           rule_of,
           summary,
)
from fxpath.ops.docs import markdown_table

__all__ = ["REGISTRY", "RULES", "Attr", "Coordinates", "NotApplicable", "Op", "Rescaling",
           "RunContext", "does_not_apply", "elementwise", "get", "io", "linear",
           "markdown_table", "pool", "pre_norm", "register", "reindex", "resample", "rule_of",
           "scale", "summary"]
