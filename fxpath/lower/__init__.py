"""Lowering: a model's graph, from either front end, into the fxpath IR.

* `fxpath.lower.core`: what both front ends share: the IR builder, one builder per IR op form
  (the attribute forms, the checks, the refusal messages);
* `fxpath.lower.fx`: the torch.fx front end (a traced module; `lower`);
* `fxpath.lower.aten`: the torch.export front end (an ATen graph; `lower_exported`).

The refusal tables both front ends read are in `fxpath.refusals`. Both produce the same IR for
the same model, which `fxpath.passes.normalize` then takes.
"""

from __future__ import annotations

from .aten import lower_exported
from .fx import has_rule, lower

__all__ = ["has_rule", "lower", "lower_exported"]
