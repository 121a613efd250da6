"""The hand-written prose of docs/cli.md, around what `fxpath.tools.cli_docs` generates from
the parser: `INTRO` (the title and the first paragraphs, before the synopsis) and `GUIDE` (what
each command prints, the flags' fine print, MODEL, exit codes, worked examples and outputs,
before the reference). Markdown; regenerate docs/cli.md after editing it:
``python -m fxpath.tools.cli_docs``.
"""

from __future__ import annotations

__all__ = ["GUIDE", "INTRO"]

INTRO = """\
# The `fxpath` command line

`fxpath` builds a timm or torchvision model with random weights and prints its path-norms, the
path mass carried by each parameter tensor, or prunes it and prints the certified path-metric
between the dense and the pruned network (with `--structured`, whole channels come out: a
smaller, faster model), or quantizes it and prints the certified path-metric between the model
and its quantized copy. It is installed with the package as a console script
(`python -m fxpath.tools.cli` runs the same program).

The [reference](#reference) at the end is generated from the argparse parser: it is the text
of `fxpath --help` and `fxpath COMMAND --help`, which also show example invocations.
"""

GUIDE = """\
| command  | what it prints                                                                  |
|----------|---------------------------------------------------------------------------------|
| `norm`   | one line per `--q`: the l^q path-norm, its value and its log10, computed in float64 (10 significant digits; `--float32`: 6) |
| `scores` | the `--top` parameter tensors carrying the most l^1 path mass (sum of the path-magnitude scores of their entries), largest first |
| `prune`  | the overall sparsity of the conv/linear weights after pruning, and the certified l^1 path-metric between the dense and the pruned model (value, log10, relative to the dense path-norm, exact or upper bound); with `--structured`, the parameters, MACs and batch-1 CPU latency of the dense and the small model, the channels removed and the exact certified path-metric ([below](#structured-pruning)) |
| `metric` | the certified l^1 path-metric between MODEL and OTHER (a checkpoint or `.pt2` of the same architecture), exact or upper bound, and the Lipschitz certificate it gives ([below](#metric)) |
| `check` | the support report: every op kind of MODEL, how often, supported (and what it lowers to) or why not, and where the unsupported ones sit ([below](#check)) |
| `plot` | a PNG: path mass per tensor, score distribution per tensor, sparsity per tensor after pruning, or the zoo's path-norms against parameter counts ([below](#plot)) |
| `zoo` | sweeps the timm and torchvision classifiers into a CSV and a markdown table ([zoo.md](zoo.md)) |
| `quantize` | the scheme and the average bits per weight, the size of the quantized copy in bytes against float32, the certified l^1 path-metric between the model and its quantized copy (value, log10, relative, exact or upper bound), with `--budget` the margin by which it is met, and the `--top` layers with the largest share of it ([below](#quantize)) |
| `bound` | the generalization-bound report: the depth, max-pool and size ingredients read from the IR, the complexity constants C and C', the l^1 path-norm and the bound 4 C max(1, B) (l^1 path-norm) / sqrt(n) for `--n-train N` samples with inputs bounded by `--input-bound B` ([generalization.md](generalization.md)) |

Each command also prints one timing line to stderr, e.g. `(3.21 s, torch.float32)`: the time
spent on the path computations, after the model was built, and the compute dtype. What torch
logs or prints to stderr meanwhile (a logged traceback for a damaged `.pt2`, the FX graphs
torch.export prints for a data-dependent branch) is held back: fxpath's own one-line message
says what went wrong (Python warnings still show; with `TORCH_LOGS` set, nothing is held back;
after an internal error the held-back text comes with the traceback).

## Digits and dtypes

`norm` and `metric` compute in float64, and print 10 significant digits: these are the same on
every x86_64 CPU with AVX2 (the float64 rounding errors are some 1e-15; without AVX2, torch
draws other random weights). Their answer is one pass of the path network, so float64 costs
little next to starting the command (importing torch and timm takes seconds): for timm's
ResNet-18 at 3x224x224, compiling and the l^1 and l^2 path-norms took 0.15 s in float32 and
0.24 s in float64, compiling and a path-metric 0.19 s and 0.38 s (one thread's CPU time, median
of 15; a forward took 0.045 s). `--float32` opts out.
The other commands compute in float32 (`--float64` opts in). A float32 result is printed with 6
significant digits: its seventh depends on the CPU's kernels (torchvision's ResNet-18:
6.282850349e+30 with AVX-512 convolutions, 6.28284914e+30 with AVX2 ones). The `--json`
results hold every digit, with the dtype.

## Flags

The [reference](#reference) below lists every flag of every command, its accepted values and
its default. Besides:

- `--seed N` takes any integer in [-2^63, 2^64 - 1]; `torch.manual_seed(N)` runs right before
  the model is built.
- `--float64` is honoured by every command that takes it, `prune` and `quantize` included;
  `norm` and `metric` compute in float64 already, and take `--float32` instead.
- `--checkpoint FILE` reads a `.pt`/`.pth`/`.bin` state dict (`torch.save`, loaded with
  `weights_only=True`) or a `.safetensors` one; a dict holding it under a `state_dict` or
  `model` key is unwrapped. Loading is strict: every name and every shape must fit. A `.pt2`
  MODEL holds its own weights and refuses it. An empty file, or one that is not a state dict,
  is a usage error that says so.
- `scores --save` keys the scores by state_dict name, as `fxpath.path_magnitude` returns them;
  `prune --out` writes the plain state_dict names, the pruning made permanent and the zeros in
  place. Both, and `quantize --out`, write `FILE.pt` (`torch.save`) or `FILE.safetensors`, and
  refuse any other name; `prune --export` writes a `FILE.pt2`. With `--structured`, `--out`
  saves the small model, whose layers have other shapes than MODEL's
  ([below](#structured-pruning)).
- `prune --structured` takes `--amount` in [0, 1) (default 0.5; 0.6 without it), the criteria
  `path_magnitude`, `l1` and `bn_scale` (`magnitude` scores single weights), and `--round-to K`;
  `l1`, `bn_scale` and `--round-to` without `--structured` are usage errors.
- `quantize --top N` ranks the layers by their share of the metric, each layer certified alone
  (one path-metric per layer); `--top 0` skips that work. `--biases` quantizes the
  conv/linear biases with one scale per tensor.
- `plot --out` is a `.png` (the only format it writes); it defaults to `KIND_MODEL.png`, and
  to `zoo.png` for `plot zoo`.

Every value is checked while the command line is parsed, before any model is built: a bad value
is answered with the usage line and one error naming the flag, e.g.

```
$ fxpath norm resnet18 --size 3 0 0
usage: fxpath norm [-h] [--checkpoint FILE] [--size DIM [DIM ...]] [--seed N]
                   [--float64 | --float32] [--q Q [Q ...]] [--json]
                   MODEL
fxpath norm: error: argument --size: each input dimension must be an integer >= 1, got '0'
$ fxpath norm resnet18 --q inf
...
fxpath norm: error: argument --q: q=inf: the l^inf path-norm is not supported; use a finite q > 0
$ fxpath scores resnet18 --save scores.npy
...
fxpath scores: error: argument --save: the file is a state dict of tensors (torch.save or safetensors): give FILE.pt or FILE.safetensors, got 'scores.npy'
```

A negative value that looks like a flag must be attached with `=`: `--q=-1` (it is then
rejected as not > 0).

The compute dtype is passed explicitly to the library by every command. When float32 overflows
inside a layer, the error says so and suggests `--float64` (or leaving out `--float32`).

## MODEL

| MODEL | built with |
|-------|------------|
| `NAME`, e.g. `resnet18` or `resnet18.a1_in1k` | `timm.create_model(NAME, pretrained=False)` |
| `timm:NAME` | the same |
| `torchvision:NAME`, e.g. `torchvision:resnet18` | `torchvision.models.get_model(NAME, weights=None)` |
| `smp:ARCH:ENCODER`, e.g. `smp:Unet:resnet34` | `segmentation_models_pytorch.create_model(ARCH, encoder_name=ENCODER, encoder_weights=None)`; input size 3x256x256 |
| `module.path:factory`, e.g. `mypkg.nets:make_net` | `factory()` from `import module.path` (the working directory is on the import path, as for `python -m`); its input size is its `pretrained_cfg["input_size"]` when it has one, else give `--size` |
| `FILE.pt2` | `torch.export.load(FILE)`, a saved ExportedProgram (`fxpath prune --export` writes one); its input size is its own. A program exported with a dynamic batch is exported again at a fixed batch of 2 (fxpath reads static shapes). `prune` and `plot sparsity` need a module and refuse it |

Registry models get random weights (nothing is downloaded), or `--checkpoint`'s, and are put in
eval mode. A prefix that is neither a registry nor an importable module (`foo:bar`,
`hf-hub:...`) is a usage error; for `module.path:factory` it says why the import failed
(`cannot import 'mypkg.nets' ...: ModuleNotFoundError: No module named 'mypkg'`). An unknown name is answered with the closest
registered names (the name's own registry first; a name that exists only in the other registry
is offered with its prefix):

```
$ fxpath norm torchvision:resnet19
fxpath: unknown torchvision model 'resnet19' in 'torchvision:resnet19'; did you mean torchvision:resnet18, torchvision:resnet152, torchvision:resnet101, torchvision:resnet50, torchvision:resnet34?
$ fxpath norm alexnet
fxpath: unknown timm model 'alexnet'; did you mean torchvision:alexnet, haloregnetz_b?
$ fxpath norm not_a_model
fxpath: unknown timm model 'not_a_model'; no close match among the 1371 timm models (timm.list_models() lists them)
```

(The number of timm models depends on the installed timm version.) Any other failure while a
registry builds the model is reported as `fxpath: could not build 'MODEL': <error>`.

## Exit codes

| code | meaning | on stderr |
|------|---------|-----------|
| 0 | success | the timing line |
| 1 | internal error: an unexpected exception, a bug in fxpath or in a library it calls | `fxpath: internal error, please report: <error>`, a short paragraph asking for a report with the command line and the versions of torch, torchvision and timm, then the traceback |
| 2 | usage error: a malformed command line or flag value, an unknown model, a model that cannot be built, a model fxpath refuses (not a ReLU network, an input shape that does not fit it: any `fxpath.FxPathError`), a checkpoint that is empty, unreadable or does not fit, a `zoo` selection that matches no model, or running out of memory | the usage and `fxpath COMMAND: error: ...` for command-line errors, otherwise one message `fxpath: ...`; never a traceback |
| 3 | `fxpath check` only: the report was printed and the model is not supported | the report on stdout |
| 130 | interrupted with Ctrl-C | `fxpath: interrupted` |

When the reader of the output closes the pipe early (`fxpath scores resnet18 --top 40 | head -3`)
the command stops quietly with code 0.

## Examples

The outputs below are stdout, verbatim (seed 0; the timing line on stderr is left out).

```
$ fxpath norm resnet18
l^1 path-norm of resnet18 at (3, 224, 224): 188834633.6 (log10 8.2760816500)
l^2 path-norm of resnet18 at (3, 224, 224): 2.341847284 (log10 0.3695585705)
```

```
$ fxpath norm torchvision:resnet18
l^1 path-norm of torchvision:resnet18 at (3, 224, 224): 6.282851162e+30 (log10 30.7981567716)
l^2 path-norm of torchvision:resnet18 at (3, 224, 224): 512.0112247 (log10 2.7092794820)
$ fxpath norm torchvision:resnet18 --float32
l^1 path-norm of torchvision:resnet18 at (3, 224, 224): 6.28285e+30 (log10 30.798157)
l^2 path-norm of torchvision:resnet18 at (3, 224, 224): 512.011 (log10 2.709279)
```

```
$ fxpath scores resnet18 --top 5
path mass fraction through each tensor of resnet18 at (3, 224, 224) (top 5 of 42):
    1.000000  conv1.weight
    1.000000  fc.weight
    1.000000  layer4.0.downsample.0.weight
    1.000000  layer3.0.downsample.0.weight
    1.000000  layer2.0.downsample.0.weight
```

Every path goes through the stem convolution and the classifier, hence their mass of 1. The
downsampling shortcuts carry all the rest because timm initializes the last BatchNorm of every
residual block with zero scale, so at random initialization no path crosses a residual branch
(with `fxpath scores torchvision:resnet18`, whose builder does not do this, the convolutions of
the residual branches carry nearly all the mass instead).

More invocations:

```
fxpath norm timm:resnet50 --q 1 2 4 --size 3 160 160
fxpath norm torchvision:vgg11 --seed 1
fxpath prune resnet18                                  # 60% of the conv/linear weights
fxpath prune torchvision:resnet18 --amount 0.9 --steps 10
fxpath prune resnet18 --criterion magnitude --scope layer --float64
```

## Structured pruning

`fxpath prune MODEL --structured` removes whole channels with `fxpath.prune_channels`. The
surgery is Torch-Pruning's (`pip install "fxpath[prune]"`; without it the command stops with
exit code 2 and that install command, before it builds the model). Coupled channels (a residual
stream, a concatenation, a depthwise conv and its producer) come out together; the output
layers and the input channels stay. The result is a new, physically smaller model, proved equal
(in float64, on random inputs) to the dense model with the removed neurons zeroed, so the
certified path-metric between the two is exact.

```
$ fxpath prune torchvision:resnet18 --structured --size 3 32 32 --out small.pt --export small.pt2
torchvision:resnet18 at (3, 32, 32): removed 1,844 of the 5,800 output channels of the conv/linear layers (31.8%) by path_magnitude (global), 12 coupled group(s)
                   dense       small  small/dense
  parameters  11,689,512   2,357,983        0.202
  MACs        37,523,456  25,717,663        0.685
  latency       23.49 ms    11.93 ms        0.508
latency: one sample on 1 CPU thread, median of 9 forwards of each model, alternating: 1.97x faster
layers cut most (top 5 of the 7 cut):
     511 of    512  layer4.0.conv1
     511 of    512  layer4.1.conv1
     203 of    512  layer4.0.conv2
     203 of    512  layer4.0.downsample.0
     203 of    512  layer4.1.conv2
certified l^1 path-metric to the dense model: 1.296750523e+26 (log10 26.1128564319, relative 0.999739, exact)
certified bound: ||R(x) - R_small(x)||_1 <= max(1, ||x||_inf) * 1.29675e+26 for every input x
spared (the global ranking would have emptied them; each kept its best channel): layer4.0.conv1, layer4.1.conv1
saved the small model (the whole module, torch.save) to small.pt: torch.load(FILE, weights_only=False) returns it
saved the small model as an ExportedProgram (dynamic batch) to small.pt2
```

Line by line:

- the channels removed, out of all output channels of the conv/linear layers (the output
  layer's included, though it is never cut), the criterion and scope, and how many coupled
  groups were cut;
- the parameters, the MACs of one sample (torch's FLOP counter; one multiply-add is one MAC)
  and the latency of the dense and the small model, and the ratio small/dense. The latency is
  that of a forward of one sample on one CPU thread, in the model's dtype, under
  `torch.inference_mode`: two warm-up forwards of each model, then 9 of each, the two models
  alternating (the first of each pair switches every round), and the median of each. Both are
  measured in the same run, side by side, so their ratio means more than either time. One
  thread, because a batch of one is too small to share out, and because on a machine whose
  cores are busy torch's threads wait for each other far longer than a forward takes;
- the 5 layers that lost the most output channels;
- the certified l^1 path-metric and the bound it gives. It is always computed in float64 and
  printed with 10 significant digits (`--float64` moves only the channel scores, the path
  masses that rank the channels, from float32 to float64);
- the spared layers, if any: those the global ranking would have emptied; each keeps its best
  channel (`--round-to K`: its K best);
- the files written.

The layers of the small model have fewer channels than MODEL's, so its state dict does not load
into MODEL's architecture. `--out FILE.pt` saves the whole module (`torch.save(small)`):
`torch.load("small.pt", weights_only=False)` returns it, which unpickles code, so load only
files you trust, with the package that defines MODEL's classes importable. `--out
FILE.safetensors` saves the weights only; their architecture is the program `--export FILE.pt2`
writes: `torch.export.load("small.pt2").module().load_state_dict(load_file("small.safetensors"))`.
The `.pt2` alone is a complete small model, which `fxpath norm small.pt2` reads. `fxpath metric`
compares two weight sets of one architecture and does not apply here: the metric above is the
one between the dense and the small model. With the random weights of `--seed` these figures say
little about a trained model (`--checkpoint` loads its weights); the latencies depend on the
machine.

## quantize

`fxpath quantize MODEL` quantizes the conv and linear weights of a copy of the model with
`fxpath.quantize` ([quantization.md](quantization.md)) and prints the size of the copy (each
quantized tensor at its bits, 4 bytes per scale and per other entry) against the same copy in
float32, and the certified l^1 path-metric between the model and the copy: the outputs of the
copy differ from the model's by at most `max(1, ||x||_inf)` times this value, for every input
`x`. Rounding to nearest gives a certified
upper bound; `--rounding toward_zero` gives the metric itself (`exact`). Then come the `--top`
layers whose quantization alone moves the path-lifting most, with their share of the whole
metric (toward zero the shares sum to 1 or more: a path through several layers counts in
each). With `--budget
EPS` the bits of each layer are chosen from 2 to 8 (per tensor, or per channel with
`--per-channel`) to make the model small while the certified relative metric stays at most
`EPS`; a budget that even 8 bits everywhere cannot meet is a usage error that gives the
certified value at 8 bits. Without `--float64` the certificate is computed in float32 (the
library's default is float64).

```
$ fxpath quantize torchvision:resnet18 --scheme int8 --per-channel
torchvision:resnet18 at (3, 224, 224): quantized 21 conv/linear layers (int8, per channel, nearest), 8.000 bits per weight
size: 11,782,912 bytes, against 46,796,448 in float32 (3.97x smaller)
certified l^1 path-metric to the model: 9.40327e+29 (log10 29.973279, relative 0.149666, upper bound)
layers with the largest share of the metric (top 5 of 21; each certified alone):
    0.063656  8 bits  layer4.1.conv1
    0.063273  8 bits  layer4.1.conv2
    0.062662  8 bits  layer4.0.conv2
    0.060307  8 bits  layer3.1.conv2
    0.059798  8 bits  layer3.0.conv2
```

```
$ fxpath quantize torchvision:resnet18 --scheme int8 --rounding toward_zero --fold-bn --top 3
torchvision:resnet18 at (3, 224, 224): quantized 21 conv/linear layers (int8, per tensor, toward_zero), 8.000 bits per weight
size: 11,702,196 bytes, against 46,738,848 in float32 (3.99x smaller)
certified l^1 path-metric to the model: 2.08573e+30 (log10 30.319259, relative 0.331973, exact)
layers with the largest share of the metric (top 3 of 21; each certified alone):
    0.079791  8 bits  layer4.1.conv2
    0.076481  8 bits  layer4.0.conv2
    0.076240  8 bits  layer2.1.conv1
```

```
$ fxpath quantize torchvision:resnet18 --budget 0.5 --per-channel --top 3
torchvision:resnet18 at (3, 224, 224): quantized 21 conv/linear layers (budget 0.5, integer bits, per channel, nearest), 5.514 bits per weight
size: 8,153,856 bytes, against 46,796,448 in float32 (5.74x smaller)
certified l^1 path-metric to the model: 3.10806e+30 (log10 30.492489, relative 0.494689, upper bound)
budget 0.5: met with margin 0.00531051 after 1 certified check(s)
layers with the largest share of the metric (top 3 of 21; each certified alone):
    0.163113  5 bits  layer4.1.conv1
    0.161997  5 bits  layer4.1.conv2
    0.160337  5 bits  layer4.0.conv2
```

Each took about 5 s on one CPU thread (float32). The relative metrics are large: to first order
the relative metric is the sum over the layers of their path-mass-weighted relative weight
changes ([quantization.md](quantization.md#per-layer-shares-and-the-first-order-estimate)), so
it grows with depth; here 21 layers of about 0.7% each. `--out FILE` saves the quantized
`state_dict`; with `--fold-bn` it belongs to the fused architecture (BatchNorms replaced by
`nn.Identity`, convs with biases).

## metric

`fxpath metric MODEL OTHER` prints the l^1 path-metric `||Phi(theta) - Phi(theta')||_1` between
MODEL's weights (`--checkpoint`'s, else the random ones of `--seed`) and OTHER, a checkpoint
(`.pt`, `.safetensors`) or a `.pt2` program of the same architecture. It is exact when one set
dominates the other with the same signs (a pruned copy), otherwise a certified upper bound, and
it gives the Lipschitz certificate on the outputs. A model and its pruned version:

```
$ fxpath prune resnet18 --out pruned.pt --export pruned.pt2
resnet18 at (3, 224, 224): pruned 60.0% of the conv/linear weights by path_magnitude (global)
certified l^1 path-metric to the dense model: 0 (log10 -inf, relative 0, exact)
certified bound: ||R(x) - R_pruned(x)||_1 <= max(1, ||x||_inf) * 0 for every input x
saved the pruned weights to pruned.pt
saved the pruned model as an ExportedProgram (dynamic batch) to pruned.pt2
$ fxpath metric resnet18 pruned.pt
certified l^1 path-metric between resnet18 and pruned.pt at (3, 224, 224): 0 (log10 -inf, relative 0, exact)
certified bound: ||R(x) - R_other(x)||_1 <= max(1, ||x||_inf) * 0 for every input x
$ fxpath norm pruned.pt2
l^1 path-norm of pruned.pt2 at (3, 224, 224): 188834633.6 (log10 8.2760816500)
l^2 path-norm of pruned.pt2 at (3, 224, 224): 2.341847284 (log10 0.3695585705)
```

(At timm's initialization no path crosses a residual branch, and the pruned 60% carry no path
mass: the metric is exactly 0 and the path-norms are the dense model's. With trained weights,
`--checkpoint`, it is not.) Two checkpoints: `fxpath metric resnet18 b.safetensors
--checkpoint a.safetensors`. The checkpoints `prune --out` writes hold the plain state_dict
names with the zeros in place (the pruning is made permanent); any state dict that
`model.load_state_dict(strict=True)` accepts works.

## check

`fxpath check MODEL` is the support report: every op kind of the traced model, how often it
occurs, supported (with the IR op it lowers to) or why not, and where the unsupported ones sit.
The model is then compiled to confirm the verdict. Exit code 0 when it is supported, 3 when not.

```
$ fxpath check efficientnet_b0
efficientnet_b0 at (3, 224, 224) (fx front end): NOT supported: 81 unsupported op(s); the first: SiLU at bn1.act: not positively homogeneous (a ReLU-DAG has ReLU, identity or max-pool neurons)
  op                 count  status
  Conv2d                81  supported (linear)
  batch_norm            49  supported (batchnorm)
  Identity              90  supported (identity)
  SiLU                  49  UNSUPPORTED: not positively homogeneous (a ReLU-DAG has ReLU, identity or max-pool neurons)
                            at bn1.act, blocks.0.0.bn1.act, blocks.0.0.se.act1, blocks.1.0.bn1.act, blocks.1.0.bn2.act and 44 more
  mean                  16  supported (mean)
  Sigmoid               16  UNSUPPORTED: not positively homogeneous (a ReLU-DAG has ReLU, identity or max-pool neurons)
                            at blocks.0.0.se.gate, blocks.1.0.se.gate, blocks.1.1.se.gate, blocks.2.0.se.gate, blocks.2.1.se.gate and 11 more
  mul                   16  UNSUPPORTED: product of two activations (e.g. a squeeze-excitation gate or attention)
                            at blocks.0.0.se, blocks.1.0.se, blocks.1.1.se, blocks.2.0.se, blocks.2.1.se and 11 more
  add                    9  supported (add)
  AdaptiveAvgPool2d      1  supported (adaptive_avgpool)
  Flatten                1  supported (reshape)
  Linear                 1  supported (linear)
```

When torch.fx cannot trace the model, the report comes from the torch.export front end (its
first line says which).

## JSON

With `--json`, every command prints one JSON object on stdout instead of text (the timing
line still goes to stderr). Values beyond float64 (`inf`) and `-inf` logarithms are written as
strings.

```
$ fxpath norm resnet18 --json --q 1
{
  "model": "resnet18",
  "input_shape": [3, 224, 224],
  "dtype": "torch.float64",
  "path_norms": [{"q": 1.0, "value": 188834633.63127646, "log10": 8.276081650001963, "log2": 27.49254814872328}]
}
```

(shown compacted; the output is indented). `scores --json` lists the `--top` tensors with their
mass and entry count, `prune --json` the sparsity of every tensor, the metric and the files
written, `metric --json` the metric and the dense path-norm, `check --json` every op row,
`prune --structured --json` every field of `fxpath.prune_channels`' report (the
removed channels of every layer and group, the metric, the sizes, the spared layers) with the
ratios, the latency, the channel counts, the layers cut most and the files written,
`quantize --json` every field of `fxpath.quantize`'s report (the metric, each layer's bits and
scales, and whatever else the report holds) and the file written, `plot --json` the picture
written and what it shows (the mass or the sparsity of every tensor), `zoo --json` the counts
per registry and status and the files written (with `--list`, the models).

## plot

`fxpath plot KIND MODEL --out FILE.png` draws, with matplotlib's Agg backend. matplotlib is an
optional dependency: `pip install "fxpath[plot]"` installs it (the `test` extra has it too);
without it `fxpath plot` stops with exit code 2 and that command, before building the model.

| KIND | picture |
|---|---|
| `mass` | the path mass through each parameter tensor (the sum of its scores), in the model's order |
| `scores` | the distribution of log10 of the scores of each weight tensor (box: quartiles, whiskers: 1st and 99th percentiles; zeros left out) |
| `sparsity` | the fraction of zeros in each tensor after `fxpath prune` with `--amount`, `--criterion`, `--scope`, and the overall sparsity |
| `zoo` | log10 of the l^1 path-norm against log10 of the parameter count of every supported model of a `fxpath zoo` CSV, the largest families in colour (`fxpath plot zoo zoo.csv --out zoo.png`) |

`fxpath plot mass torchvision:resnet18`, `fxpath plot scores torchvision:resnet18` and
`fxpath plot sparsity torchvision:resnet18 --amount 0.9`:

![path mass per tensor](images/mass_resnet18.png)
![score distributions per tensor](images/scores_resnet18.png)
![sparsity per tensor after pruning 90%](images/sparsity_resnet18.png)

The residual branches of torchvision's ResNet-18 carry nearly all the path mass (the
downsample shortcuts almost none); the scores shrink with depth, and pruning 90% by
path-magnitude empties the last stage and keeps the stem.

## zoo

`fxpath zoo` sweeps the timm and torchvision classifiers: see [zoo.md](zoo.md) for the flags,
the statuses, the self-checks, sharding over a batch system and the committed results.
"""  # noqa: E501
