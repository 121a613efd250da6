"""The zoo sweep: every timm and torchvision classifier compiled, timed and self-checked.

`catalogue.catalog` lists the classifiers of both registries (timm's ``timm.list_models()``,
torchvision's ``torchvision.models.list_models(module=torchvision.models)``); `catalogue.select`
keeps one model per *architecture* (see `catalogue.architecture`) unless asked for all, and
`catalogue.shard` splits the list for a batch system. `pool.sweep` runs one task per model in
worker processes (a crash or a hang costs one model, never the sweep) and `report.write_csv` /
`report.write_markdown` record the results with the machine and the git commit
(`provenance`). Two tasks (`checks`):

- `checks.check_status` ("status" mode): build the model on the meta device and compile it
  there; supported, or refused with the first reason. No weights, no arithmetic: the whole zoo
  in minutes. ``tests/tools/zoo_expected.csv`` is this mode's output.
- `checks.check_model` ("full" mode): build with random weights, compile, time the path-norm
  and the scores against the model's forward, and run three self-checks in float64
  (`selfcheck`: the function reproduced through the IR interpreter, the path-norm unchanged
  under `fxpath.rescale`, the Lipschitz bound holding for a random same-sign perturbation).

The rows are `result.ZooResult`s. The command line is ``fxpath zoo`` (`command.add_arguments`,
`command.run`; also ``python -m fxpath.tools.zoo``); ``docs/zoo.md`` describes it.
"""
