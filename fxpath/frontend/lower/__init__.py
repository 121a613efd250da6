"""Lowering: a model's graph, from either front end, into the fxpath IR.

* `fxpath.frontend.lower.core`: what both front ends share: the IR builder (`core.Lowering`)
  and one builder per IR op form (the attribute forms, the checks, the refusal messages);
* `fxpath.frontend.lower.rule`: what a rule is, and the IR ops it declares it builds;
* the torch.fx front end: `fxpath.frontend.lower.fx` (`lower`, `has_rule`) walks a traced module
  with its graph reader (`fx_reader`) and its rule table (`fx_rules.RULES`: module types,
  functions, Tensor methods);
* the torch.export front end: `fxpath.frontend.lower.aten` (`lower_exported`) walks an ATen
  graph with its graph reader (`aten_reader`) and its rule table (`aten_rules.RULES`: ATen op
  overload packets).

Adding an op: its definition in `fxpath.ops`, one rule in each rule table (and an entry in
`fxpath.frontend.refusals` only where it is refused). Both front ends produce the same IR for
the same model, which `fxpath.passes.pipeline.normalize` then takes.
"""
