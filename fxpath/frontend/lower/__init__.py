"""Lowering: a model's graph, from either front end, into the fxpath IR.

* `fxpath.frontend.lower.core`: what both front ends share: the IR builder, one builder per IR op
form
  (the attribute forms, the checks, the refusal messages);
* `fxpath.frontend.lower.fx`: the torch.fx front end (a traced module; `lower`);
* `fxpath.frontend.lower.aten`: the torch.export front end (an ATen graph; `lower_exported`).

The refusal tables both front ends read are in `fxpath.frontend.refusals`. Both produce the same IR
for the same model, which `fxpath.passes.pipeline.normalize` then takes.
"""
