"""The argparse parser of the ``fxpath`` command line: its help texts (descriptions, examples,
exit codes), the parse-time checks of the flag values (the ``type=`` functions) and
`build_parser`. `fxpath.tools.cli_docs` renders docs/cli.md from it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from fxpath.apps.quantize.rounding import ROUNDINGS, SCHEMES
from fxpath.errors import ArgumentError
from fxpath.tools.models import parse_model
from fxpath.validate import check_q

__all__ = ["EXIT_HELP", "MODEL_HELP", "ONE_SHOT", "PICTURE_SUFFIXES", "PRUNE_AMOUNT",
           "PRUNE_CRITERIA", "STRUCTURED_AMOUNT", "STRUCTURED_CRITERIA", "TENSOR_SUFFIXES",
           "budget", "build_parser", "exponent", "finish", "fraction", "input_bound", "model_spec",
           "non_negative_int", "picture_file", "positive_int", "program_file", "seed",
           "tensor_file"]

#: the commands whose answer is one pass of the path network: computed in float64 unless
#: --float32 (it costs little more, and their printed digits are then the same on every CPU)
ONE_SHOT = ("norm", "metric")
#: the files that --save and --out write tensors to (torch.save, safetensors)
TENSOR_SUFFIXES = (".pt", ".safetensors")
#: ``fxpath prune``'s default --amount: of the weights, and of the channels (--structured)
PRUNE_AMOUNT = 0.6
STRUCTURED_AMOUNT = 0.5
#: the criteria of ``fxpath prune`` and those that only rank channels (--structured)
STRUCTURED_CRITERIA = ("l1", "bn_scale")
PRUNE_CRITERIA = ("path_magnitude", "magnitude", *STRUCTURED_CRITERIA)
#: the pictures ``fxpath plot`` writes
PICTURE_SUFFIXES = (".png",)

MODEL_HELP = """\
MODEL is a timm model name (resnet18, also with a pretrained tag: resnet18.a1_in1k),
timm:NAME, torchvision:NAME (torchvision:resnet18), smp:ARCH:ENCODER for a
segmentation_models_pytorch model (smp:Unet:resnet34, at 3x256x256), module.path:factory
for your own model (factory() builds it; run from the directory that holds the module), or a saved
ExportedProgram FILE.pt2 (torch.export.save). Registry models are built with random
weights (seeded by --seed, no download) and put in eval mode; --checkpoint FILE loads
weights (.pt or .safetensors) instead. A misspelt name is answered with the closest
registered names."""

EXIT_HELP = """\
exit codes:
  0    success
  1    internal error: a bug in fxpath or a library it calls (message and traceback
       on stderr; please report it)
  2    usage error: a bad flag value, an unknown model, a model that cannot be built
       or that fxpath refuses (not a ReLU network, wrong --size); one line
       'fxpath: ...' or the usage and the error on stderr
  3    fxpath check: the model is not supported (the report says why)
  130  interrupted (Ctrl-C)"""

_EXAMPLES = {
    None: """\
  fxpath norm resnet18                         # l^1 and l^2 path-norms, timm ResNet-18
  fxpath norm torchvision:resnet18             # torchvision's (norm: float64 by default)
  fxpath scores resnet18 --top 5               # the 5 tensors with the most path mass
  fxpath scores resnet18 --save scores.safetensors   # every score, keyed by state_dict name
  fxpath prune torchvision:resnet18 --amount 0.6 --steps 5
  fxpath prune resnet18 --out pruned.pt --export pruned.pt2   # checkpoint + ExportedProgram
  fxpath prune torchvision:resnet18 --structured --export small.pt2   # remove channels
  fxpath metric resnet18 pruned.pt             # certified path-metric, dense vs pruned
  fxpath norm pruned.pt2 --json                # a saved ExportedProgram; JSON results
  fxpath norm mypkg.nets:make_net --size 3 32 32   # your own model: module.path:factory
  fxpath check efficientnet_b0                 # every op: supported, or why not
  fxpath zoo --filter 'resnet*' --jobs 2       # sweep the timm and torchvision zoo
  fxpath plot mass resnet18 --out mass.png     # pictures: mass, scores, sparsity, zoo
  fxpath quantize torchvision:resnet18 --scheme int8 --per-channel
  fxpath norm --help                           # the flags of one subcommand""",
    "norm": """\
  fxpath norm resnet18
  fxpath norm torchvision:resnet18 --float32  # faster, 6 significant digits
  fxpath norm timm:resnet50 --q 1 2 4 --size 3 160 160
  fxpath norm torchvision:vgg11 --seed 1""",
    "scores": """\
  fxpath scores resnet18 --top 5
  fxpath scores torchvision:resnet18 --top 20 --float64
  fxpath scores resnet18 --save scores.safetensors    # all scores (or scores.pt)
  fxpath scores resnet18 --checkpoint my_weights.pt --json""",
    "prune": """\
  fxpath prune resnet18                               # 60% of conv/linear weights
  fxpath prune torchvision:resnet18 --amount 0.9 --steps 10
  fxpath prune resnet18 --criterion magnitude --scope layer
  fxpath prune resnet18 --out pruned.safetensors      # the pruned weights (zeros kept)
  fxpath prune resnet18 --export pruned.pt2           # and/or a torch.export program
  fxpath metric resnet18 pruned.safetensors           # the metric again, from the files
  fxpath prune torchvision:resnet18 --structured --size 3 32 32   # 50% of the channels
  fxpath prune torchvision:resnet18 --structured --amount 0.3 --round-to 8 --out small.pt
  fxpath prune resnet18 --structured --criterion l1 --export small.pt2 --json""",
    "quantize": """\
  fxpath quantize torchvision:resnet18 --scheme int8            # per tensor, to nearest
  fxpath quantize torchvision:resnet18 --scheme int4 --per-channel --rounding toward_zero
  fxpath quantize resnet18 --scheme float8_e4m3fn --fold-bn --out resnet18_fp8.pt
  fxpath quantize torchvision:resnet18 --budget 0.01 --per-channel --size 3 64 64
  fxpath quantize resnet18 --scheme int4 --per-channel --json   # every field of the report""",
    "metric": """\
  fxpath prune resnet18 --out pruned.pt && fxpath metric resnet18 pruned.pt
  fxpath metric resnet18 b.safetensors --checkpoint a.safetensors   # two checkpoints
  fxpath metric torchvision:resnet18 other.pt --json""",
    "check": """\
  fxpath check resnet18                     # supported: every op listed
  fxpath check efficientnet_b0              # refused: SiLU, Sigmoid, mul, where they sit
  fxpath check mypkg.nets:make_net --size 3 32 32 --json""",
    "zoo": """\
  fxpath zoo --filter 'resnet*' 'vgg*'             # one model per architecture
  fxpath zoo --source torchvision --all --jobs 2   # every torchvision classifier
  fxpath zoo --mode status --all --out zoo_status  # status of all, meta device, minutes
  fxpath zoo --all --shard $I/$N --out zoo_$I      # shard I of N (Slurm array, k8s jobs)
  fxpath zoo --merge zoo_*.csv --out zoo           # one table from the shards
  fxpath zoo --size 3 64 64 --timeout 120 --resume""",
    "plot": """\
  fxpath plot mass resnet18 --out mass.png              # path mass per tensor
  fxpath plot scores torchvision:vgg11 --out scores.png # score distribution per tensor
  fxpath plot sparsity resnet18 --amount 0.9 --out sparsity.png
  fxpath plot zoo zoo.csv --out zoo.png                 # log10 path-norm vs parameters
  fxpath plot sparsity resnet18 --json                  # and the sparsity per tensor""",
    "bound": """\
  fxpath bound torchvision:resnet18 --n-train 1268355 --input-bound 2.64   # ImageNet
  fxpath bound resnet18 --n-train 50000 --json          # CIFAR-10-sized, inputs in [-1, 1]
  fxpath bound torchvision:vgg16 --n-train 1268355 --input-bound 2.64 --checkpoint w.pt""",
}

_SUBCOMMANDS = {
    "norm": ("l^q path-norms (value and log10)",
             "Print the l^q path-norm ||Phi(theta)||_q of MODEL for each --q, with its value\n"
             "and its log10: computed in float64, 10 significant digits, the same on every\n"
             "CPU (inf only beyond float64's range); with --float32, 6 digits."),
    "scores": ("path mass through each parameter tensor",
               "Print the parameter tensors of MODEL that carry the most l^1 path mass: the\n"
               "sum of the path-magnitude scores of the tensor's entries, largest first."),
    "prune": ("prune by path-magnitude and print the certified path-metric",
              "Prune the conv and linear weights of MODEL and print the overall sparsity and\n"
              "the certified l^1 path-metric between the dense and the pruned model: the\n"
              "outputs move by at most max(1, ||x||_inf) times this value.\n\n"
              "With --structured, remove whole channels instead (fxpath.prune_channels;\n"
              "coupled channels go together, cut by Torch-Pruning): print the parameters,\n"
              "MACs and batch-1 CPU latency of the dense and the small model, the channels\n"
              "removed and the layers cut most, and the exact certified path-metric."),
    "quantize": ("quantize the weights and print the certified path-metric",
                 "Quantize the conv and linear weights of a copy of MODEL and print the\n"
                 "certified l^1 path-metric between the model and the copy (exact when\n"
                 "rounding toward zero), the bits per weight and the layers that contribute\n"
                 "most. With --budget EPS the bits of each layer are chosen (from 2 to 8) so\n"
                 "that the certified relative path-metric is at most EPS."),
    "metric": ("certified l^1 path-metric between two weight sets of one model",
               "Print the l^1 path-metric ||Phi(theta) - Phi(theta')||_1 between MODEL (with\n"
               "--checkpoint's weights, else random ones of --seed) and OTHER, a checkpoint\n"
               "(.pt, .safetensors) or ExportedProgram (.pt2) of the same architecture, e.g.\n"
               "the output of 'fxpath prune --out'. Exact when one set dominates the other\n"
               "(pruning), else a certified upper bound; with it, the Lipschitz certificate\n"
               "||R(x) - R'(x)||_1 <= max(1, ||x||_inf) * metric. Computed in float64 (10\n"
               "significant digits), or with --float32 in float32 (6 digits)."),
    "check": ("the support report: every op, supported or why not",
              "Trace MODEL and list every op kind it uses, how often, and whether fxpath\n"
              "supports it (and what it lowers to) or why not, with where the unsupported\n"
              "ops sit; then compile it to confirm. Exit code 3 when it is not supported."),
    "zoo": ("sweep the timm and torchvision classifiers",
            "Compile every timm and torchvision classifier (one per architecture unless\n"
            "--all), time its path-norm and scores against its forward and run three\n"
            "self-checks (the function through the IR interpreter, the path-norm under\n"
            "fxpath.rescale, the Lipschitz bound on a perturbation); or, with --mode\n"
            "status, only decide supported or why not. Each model runs in a worker process\n"
            "with a time limit; writes STEM.csv and STEM.md (docs/zoo.md)."),
    "plot": ("pictures: path mass, score distributions, sparsity, the zoo",
             "Write a PNG: 'mass' (path mass per parameter tensor), 'scores' (distribution\n"
             "of the scores of each weight tensor), 'sparsity' (zeros per tensor after\n"
             "'fxpath prune' with --amount/--criterion/--scope), or 'zoo' (log10 path-norm\n"
             "against parameter count by family, from the CSV of 'fxpath zoo'). Needs\n"
             "matplotlib: pip install \"fxpath[plot]\"."),
    "bound": ("the path-norm generalization bound and its ingredients",
              "Print the path-norm generalization bound of MODEL (ICLR 2024 path-norm\n"
              "toolkit): its Rademacher term 4 * C * B * ||Phi||_1 / sqrt(n) and the\n"
              "sharpened one with C', and every ingredient: the depth D, the largest\n"
              "max-pool window K, the max-pooling types P, the max-pools on a path M, d_in,\n"
              "d_out, the l^1 path-norm (docs/generalization.md)."),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written; a wider column for the flags."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


# -- parse-time validation (argparse ``type=`` functions) -----------------------------------

def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None


def positive_int(what: str = "the value") -> Callable[[str], int]:
    """A ``type=`` function accepting integers >= 1; ``what`` names them in messages."""

    def parse(text: str) -> int:
        value = _parse_int(text, what)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= 1, got {text!r}")
        return value

    return parse


def seed(text: str) -> int:
    """A seed ``torch.manual_seed`` accepts: an integer in [-2**63, 2**64 - 1]."""
    value = _parse_int(text, "seed")
    if not -(2**63) <= value < 2**64:
        raise argparse.ArgumentTypeError(f"seed must be in [-2**63, 2**64 - 1], got {text}")
    return value


def _parse_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None


def exponent(text: str) -> float:
    """A path-norm exponent ``q``: a finite number > 0 that the library accepts
    (`fxpath.validate.check_q`: at most ``MAX_Q``)."""
    q = _parse_float(text, "q")
    if q == math.inf:
        raise argparse.ArgumentTypeError(
            f"q={text}: the l^inf path-norm is not supported; use a finite q > 0")
    if math.isnan(q) or q <= 0:
        raise argparse.ArgumentTypeError(f"q must be a finite number > 0, got {text!r}")
    try:
        return check_q(q)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _suffixed(what: str, suffixes: tuple[str, ...], writes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if Path(text).suffix.lower() not in suffixes or not Path(text).stem:
            names = " or ".join(f"FILE{s}" for s in suffixes)
            raise argparse.ArgumentTypeError(
                f"{what} is {writes}: give {names}, got {text!r}")
        return text

    return parse


#: ``--save``, ``--out`` of tensors: ``.pt`` (torch.save) or ``.safetensors``
tensor_file = _suffixed("the file", TENSOR_SUFFIXES,
                        "a state dict of tensors (torch.save or safetensors)")
#: ``plot --out``: a PNG
picture_file = _suffixed("the picture", PICTURE_SUFFIXES, "a PNG")
#: ``prune --export``: a ``.pt2`` (what ``fxpath norm FILE.pt2`` reads back)
program_file = _suffixed("the program", (".pt2",), "an ExportedProgram (torch.export.save)")


def fraction(text: str) -> float:
    """A pruning amount: a number in [0, 1]."""
    value = _parse_float(text, "amount")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"amount must be in [0, 1], got {text!r}")
    return value


def budget(text: str) -> float:
    """A quantization budget: a finite number > 0 (the largest relative path-metric)."""
    value = _parse_float(text, "budget")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"budget must be a finite number > 0, got {text!r}")
    return value


def input_bound(text: str) -> float:
    """An input bound B (``||x||_inf <= B``): a finite number > 0."""
    value = _parse_float(text, "input-bound")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"input-bound must be a finite number > 0, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A ``type=`` function accepting integers >= 0."""
    value = _parse_int(text, "the value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"the value must be an integer >= 0, got {text!r}")
    return value


def model_spec(text: str) -> str:
    """A ``type=`` function for MODEL: ``text`` itself once `parse_model` accepts its form."""
    parse_model(text)
    return text


# -- the parser -----------------------------------------------------------------------------

def _add_common(c: argparse.ArgumentParser) -> None:
    c.add_argument("model", metavar="MODEL", type=model_spec,
                   help="timm name, timm:NAME, torchvision:NAME, module.path:factory or "
                        "FILE.pt2 (see 'fxpath --help')")
    c.add_argument("--checkpoint", metavar="FILE",
                   help="load these weights into MODEL (.pt or .safetensors state dict; "
                        "strict) (default: random weights of --seed)")
    c.add_argument("--size", metavar="DIM", type=positive_int("each input dimension"), nargs="+",
                   help="per-sample input shape without the batch dimension, positive "
                        "integers, e.g. --size 3 160 160 (default: the model's own: timm's "
                        "input_size, 3 224 224 for torchvision)")
    c.add_argument("--seed", metavar="N", type=seed, default=0,
                   help="seed of the random weights (default: %(default)s)")
    one_shot = c.prog.split()[-1] in ONE_SHOT
    dtypes = c.add_mutually_exclusive_group() if one_shot else c
    dtypes.add_argument("--float64", action="store_true",
                        help="compute the path network in float64 (default: float32; float64 "
                             "for norm and metric)")
    if one_shot:
        dtypes.add_argument("--float32", action="store_true",
                            help="compute in float32: less time and memory; prints the 6 "
                                 "significant digits float32 carries (default: float64)")


def _add_subcommand(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    short, description = _SUBCOMMANDS[name]
    c = sub.add_parser(name, help=short, formatter_class=_Formatter,
                       description=f"{description}\n\n{MODEL_HELP}",
                       epilog=f"examples:\n{_EXAMPLES[name]}\n\n{EXIT_HELP}")
    _add_common(c)
    return c


def build_parser() -> argparse.ArgumentParser:
    """The ``fxpath`` argument parser: subcommands ``norm``, ``scores``, ``prune``,
    ``quantize``, ``metric``, ``check``, ``zoo``, ``plot`` and ``bound``."""
    from importlib.metadata import version

    __version__ = version("fxpath")

    p = argparse.ArgumentParser(
        prog="fxpath", formatter_class=_Formatter,
        description="Path-norms, path-magnitude scores and path-magnitude pruning of timm and "
                    f"torchvision\nReLU networks.\n\n{MODEL_HELP}",
        epilog=f"examples:\n{_EXAMPLES[None]}\n\n{EXIT_HELP}")
    p.add_argument("--version", action="version", version=f"fxpath {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    c = _add_subcommand(sub, "norm")
    c.add_argument("--q", metavar="Q", type=exponent, nargs="+", default=[1.0, 2.0],
                   help="exponents of the l^q path-norms, finite numbers > 0 (default: 1 2)")
    _add_json(c)
    c = _add_subcommand(sub, "scores")
    c.add_argument("--top", metavar="N", type=positive_int(), default=10,
                   help="how many tensors to print, N >= 1 (default: %(default)s)")
    c.add_argument("--save", metavar="FILE", type=tensor_file,
                   help="save every score tensor, keyed by state_dict name, to FILE.pt "
                        "(torch.save) or FILE.safetensors (default: print only)")
    _add_json(c)
    _add_prune(sub)
    _add_quantize(sub)
    _add_tools(sub)
    _add_bound(sub)
    return p


def _add_prune(sub: argparse._SubParsersAction) -> None:
    c = _add_subcommand(sub, "prune")
    c.add_argument("--structured", action="store_true",
                   help="remove whole channels instead (fxpath.prune_channels, through "
                        "Torch-Pruning: pip install \"fxpath[prune]\"): a smaller, faster "
                        "model, timed against the dense one (default: zero single weights, "
                        "same size)")
    c.add_argument("--amount", metavar="A", type=fraction, default=None,
                   help="fraction of the conv/linear weights to set to zero, in [0, 1]; with "
                        f"--structured, of the channels to remove, in [0, 1) (default: "
                        f"{PRUNE_AMOUNT}; {STRUCTURED_AMOUNT} with --structured)")
    c.add_argument("--criterion", default="path_magnitude", choices=list(PRUNE_CRITERIA),
                   help="score of a weight: its share of path mass, or |w| (magnitude); with "
                        "--structured, of a channel: its path mass, Torch-Pruning's filter L1 "
                        "norm (l1) or BatchNorm scale (bn_scale) (default: %(default)s)")
    c.add_argument("--scope", default="global", choices=["global", "layer"],
                   help="one threshold over all weights (channels), or one per tensor (layer) "
                        "(default: %(default)s)")
    c.add_argument("--steps", metavar="N", type=positive_int(), default=1,
                   help="prune-and-rescore rounds, N >= 1; the kept fraction shrinks "
                        "geometrically to 1 - A (with --structured: the rounds reach A "
                        "together) (default: %(default)s)")
    c.add_argument("--round-to", metavar="K", type=positive_int("round-to"),
                   help="--structured only: keep channel counts at multiples of K, K >= 1 "
                        "(default: any count)")
    c.add_argument("--out", metavar="FILE", type=tensor_file,
                   help="save the pruned weights (a state dict, zeros in place) to FILE.pt or "
                        "FILE.safetensors; with --structured, FILE.pt holds the whole small "
                        "module (torch.save) and FILE.safetensors its weights only, whose "
                        "architecture comes from --export (default: none)")
    c.add_argument("--export", metavar="FILE.pt2", type=program_file,
                   help="save the pruned (with --structured: the small) model as an "
                        "ExportedProgram (torch.export.save; batch dimension dynamic where it "
                        "exports) (default: none)")
    _add_json(c)


def finish(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The checks that involve several flags (``type=`` functions see one value), as usage
    errors of the subcommand, and the defaults that depend on another flag: ``prune``'s
    ``--amount``, ``--criterion`` and ``--round-to`` against ``--structured``."""
    if args.command != "prune":
        return args
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    error = sub.choices["prune"].error
    if not args.structured:
        if args.criterion in STRUCTURED_CRITERIA:
            error(f"argument --criterion: {args.criterion} ranks channels: add --structured "
                  "(single weights: path_magnitude or magnitude)")
        if args.round_to is not None:
            error("argument --round-to: rounds channel counts: add --structured")
        args.amount = PRUNE_AMOUNT if args.amount is None else args.amount
        return args
    if args.criterion == "magnitude":
        error("argument --criterion: magnitude scores single weights; with --structured use "
              "path_magnitude, l1 or bn_scale")
    if args.amount is not None and args.amount >= 1.0:
        error(f"argument --amount: with --structured, amount must be in [0, 1) (some channels "
              f"stay), got '{args.amount:g}'")
    args.amount = STRUCTURED_AMOUNT if args.amount is None else args.amount
    return args


def _add_json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--json", action="store_true",
                   help="print the results as one JSON object (default: text)")


def _add_tools(sub: argparse._SubParsersAction) -> None:
    """The subcommands metric, check, zoo and plot."""
    from fxpath.tools import plot
    from fxpath.tools.zoo import command as zoo_command

    c = _add_subcommand(sub, "metric")
    c.add_argument("other", metavar="OTHER",
                   help="the other weights: a checkpoint (.pt, .safetensors) or a .pt2 of "
                        "MODEL's architecture")
    _add_json(c)
    _add_json(_add_subcommand(sub, "check"))
    short, description = _SUBCOMMANDS["zoo"]
    c = sub.add_parser("zoo", help=short, formatter_class=_Formatter, description=description,
                       epilog=f"examples:\n{_EXAMPLES['zoo']}\n\n{EXIT_HELP}")
    zoo_command.add_arguments(c)
    short, description = _SUBCOMMANDS["plot"]
    c = sub.add_parser("plot", help=short, formatter_class=_Formatter,
                       description=f"{description}\n\n{MODEL_HELP}",
                       epilog=f"examples:\n{_EXAMPLES['plot']}\n\n{EXIT_HELP}")
    c.add_argument("kind", metavar="KIND", choices=plot.KINDS,
                   help="mass, scores, sparsity (of MODEL) or zoo (MODEL is then the CSV of "
                        "'fxpath zoo')")
    _add_common(c)
    c.add_argument("--out", metavar="FILE.png", type=picture_file,
                   help="the picture, a PNG (default: KIND_MODEL.png in the working "
                        "directory)")
    c.add_argument("--amount", metavar="A", type=fraction, default=0.6,
                   help="sparsity: fraction of the conv/linear weights to prune "
                        "(default: %(default)s)")
    c.add_argument("--criterion", default="path_magnitude",
                   choices=["path_magnitude", "magnitude"],
                   help="sparsity: the pruning criterion (default: %(default)s)")
    c.add_argument("--scope", default="global", choices=["global", "layer"],
                   help="sparsity: one threshold or one per tensor (default: %(default)s)")
    _add_json(c)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    c = _add_subcommand(sub, "quantize")
    c.add_argument("--scheme", default="int8", choices=list(SCHEMES), metavar="SCHEME",
                   help="number format of the weights: " + ", ".join(SCHEMES)
                        + " (default: %(default)s; with --budget the bits come from 2 to 8)")
    c.add_argument("--per-channel", action="store_true",
                   help="one scale per output channel (default: one per tensor)")
    c.add_argument("--rounding", default="nearest", choices=list(ROUNDINGS),
                   help="to nearest (ties to even) or toward zero, which makes the certified "
                        "metric exact (default: %(default)s)")
    c.add_argument("--biases", action="store_true", help="quantize the biases too")
    c.add_argument("--fold-bn", action="store_true",
                   help="fuse BatchNorms into their convs first (torch's conv-BN fusion) and "
                        "quantize the fused weights")
    c.add_argument("--budget", metavar="EPS", type=budget,
                   help="choose the bits of each layer (2 to 8) to keep the certified relative "
                        "path-metric at most EPS, a number > 0")
    c.add_argument("--top", metavar="N", type=non_negative_int, default=5,
                   help="print the N layers with the largest share of the metric, each "
                        "certified alone; 0 skips them (default: %(default)s)")
    c.add_argument("--out", metavar="FILE", type=tensor_file,
                   help="save the quantized copy's state_dict to FILE.pt (torch.save) or "
                        "FILE.safetensors (default: none)")
    _add_json(c)


def _add_bound(sub: argparse._SubParsersAction) -> None:
    c = _add_subcommand(sub, "bound")
    c.add_argument("--n-train", metavar="N", type=positive_int("n-train"), required=True,
                   help="the number of i.i.d. training samples n, an integer >= 1; required "
                        "(default: none)")
    c.add_argument("--input-bound", metavar="B", type=input_bound, default=1.0,
                   help="B with ||x||_inf <= B for every input after preprocessing, a finite "
                        "number > 0; 2.64 for normalized ImageNet (default: %(default)s: "
                        "inputs in [-1, 1])")
    _add_json(c)
