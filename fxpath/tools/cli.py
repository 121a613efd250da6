"""The ``fxpath`` command line: path-norms, scores and pruning of timm/torchvision models.

    fxpath norm resnet18                       # timm model, l^1 and l^2 path-norms
    fxpath norm torchvision:resnet50 --size 3 224 224
    fxpath scores resnet18 --top 10            # tensors carrying the most path mass
    fxpath prune torchvision:resnet18 --amount 0.6
    fxpath quantize torchvision:resnet18 --scheme int8 --per-channel
    fxpath metric resnet18 pruned.pt           # certified path-metric between two weight sets
    fxpath check efficientnet_b0               # every op: supported, or why not
    fxpath zoo --filter 'resnet*' --jobs 2     # sweep the timm/torchvision zoo
    fxpath plot mass resnet18 --out mass.png   # pictures (PNG)

The argparse layer only: what the newer commands do lives in `fxpath.tools.commands`,
`fxpath.tools.zoo` and `fxpath.tools.plot`.

Exit codes: 0 success, 1 internal error (a bug, reported with its traceback), 2 usage error,
unknown model or a model fxpath refuses (message ``fxpath: ...`` on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from fxpath.api import compile as compile_program
from fxpath.apps.prune import prune
from fxpath.apps.quantize import ROUNDINGS, SCHEMES, quantize
from fxpath.errors import FxPathError
from fxpath.tools import commands

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "budget", "build_model",
           "build_parser", "exponent", "fraction", "main", "non_negative_int", "parse_model",
           "positive_int", "seed", "suggestions"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_INTERRUPTED = 130

#: input shape of torchvision models (their builders do not record one)
TORCHVISION_INPUT_SIZE = (3, 224, 224)
_PREFIXES = ("timm", "torchvision", "smp")
#: input shape of segmentation_models_pytorch models (smp:ARCH:ENCODER)
SMP_INPUT_SIZE = (3, 256, 256)

_MODEL_HELP = """\
MODEL is a timm model name (resnet18, also with a pretrained tag: resnet18.a1_in1k),
timm:NAME, torchvision:NAME (torchvision:resnet18), smp:ARCH:ENCODER for a
segmentation_models_pytorch model (smp:Unet:resnet34, at 3x256x256), module.path:factory
for your own model (factory() builds it; run from the directory that holds the module), or a saved
ExportedProgram FILE.pt2 (torch.export.save). Registry models are built with random
weights (seeded by --seed, no download) and put in eval mode; --checkpoint FILE loads
weights (.pt or .safetensors) instead. A misspelt name is answered with the closest
registered names."""

_EXIT_HELP = """\
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
  fxpath norm torchvision:resnet18 --float64   # torchvision's, computed in float64
  fxpath scores resnet18 --top 5               # the 5 tensors with the most path mass
  fxpath scores resnet18 --save scores.safetensors   # every score, keyed by state_dict name
  fxpath prune torchvision:resnet18 --amount 0.6 --steps 5
  fxpath prune resnet18 --out pruned.pt --export pruned.pt2   # checkpoint + ExportedProgram
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
  fxpath norm torchvision:resnet18 --float64
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
  fxpath metric resnet18 pruned.safetensors           # the metric again, from the files""",
    "quantize": """\
  fxpath quantize torchvision:resnet18 --scheme int8            # per tensor, to nearest
  fxpath quantize torchvision:resnet18 --scheme int4 --per-channel --rounding toward_zero
  fxpath quantize resnet18 --scheme float8_e4m3fn --fold-bn --out resnet18_fp8.pt
  fxpath quantize torchvision:resnet18 --budget 0.01 --per-channel --size 3 64 64""",
    "metric": """\
  fxpath prune resnet18 --out pruned.pt && fxpath metric resnet18 pruned.pt
  fxpath metric resnet18 b.safetensors --checkpoint a.safetensors   # two checkpoints
  fxpath metric torchvision:resnet18 other.pt --float64 --json""",
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
  fxpath plot zoo zoo.csv --out zoo.png                 # log10 path-norm vs parameters""",
}

_SUBCOMMANDS = {
    "norm": ("l^q path-norms (value and log10)",
             "Print the l^q path-norm ||Phi(theta)||_q of MODEL for each --q, with its value\n"
             "(10 significant digits; inf only beyond float64) and its log10."),
    "scores": ("path mass through each parameter tensor",
               "Print the parameter tensors of MODEL that carry the most l^1 path mass: the\n"
               "sum of the path-magnitude scores of the tensor's entries, largest first."),
    "prune": ("prune by path-magnitude and print the certified path-metric",
              "Prune the conv and linear weights of MODEL and print the overall sparsity and\n"
              "the certified l^1 path-metric between the dense and the pruned model: the\n"
              "outputs move by at most max(1, ||x||_inf) times this value."),
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
               "||R(x) - R'(x)||_1 <= max(1, ||x||_inf) * metric."),
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
    """A path-norm exponent ``q``: a finite number > 0."""
    q = _parse_float(text, "q")
    if q == math.inf:
        raise argparse.ArgumentTypeError(
            f"q={text}: the l^inf path-norm is not supported; use a finite q > 0")
    if math.isnan(q) or q <= 0:
        raise argparse.ArgumentTypeError(f"q must be a finite number > 0, got {text!r}")
    return q


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


def non_negative_int(text: str) -> int:
    """A ``type=`` function accepting integers >= 0."""
    value = _parse_int(text, "the value")
    if value < 0:
        raise argparse.ArgumentTypeError(f"the value must be an integer >= 0, got {text!r}")
    return value


def parse_model(spec: str) -> tuple[str, str]:
    """Split MODEL into ``(registry, name)``: ``"resnet18"`` -> ``("timm", "resnet18")``;
    ``("pt2", path)`` for a saved ExportedProgram, ``("factory", spec)`` for
    ``module.path:factory`` (an importable module, found without importing it).

    Raises:
        argparse.ArgumentTypeError: an unknown prefix or an empty name.
    """
    if spec.endswith(".pt2"):
        return "pt2", spec
    prefix, sep, name = spec.partition(":")
    if not sep:
        prefix, name = "timm", spec
    elif prefix not in _PREFIXES:
        if commands.is_factory_spec(spec):
            return "factory", spec
        raise argparse.ArgumentTypeError(
            f"unknown model prefix {prefix + ':'!r} in {spec!r}: use a timm name, timm:NAME, "
            "torchvision:NAME, smp:ARCH:ENCODER, module.path:factory (an importable module) "
            "or a .pt2 file")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"empty model name in {spec!r}")
    arch, colon, encoder = name.partition(":")
    if prefix == "smp" and not (colon and arch.strip() and encoder.strip()
                                and ":" not in encoder):
        raise argparse.ArgumentTypeError(
            f"segmentation_models_pytorch models are smp:ARCH:ENCODER (smp:Unet:resnet34), "
            f"got {spec!r}")
    return prefix, name


def _model_spec(text: str) -> str:
    parse_model(text)
    return text


# -- models ---------------------------------------------------------------------------------

def _registry(prefix: str) -> list[str]:
    if prefix == "torchvision":
        import torchvision

        return list(torchvision.models.list_models())
    if prefix == "smp":  # ARCH:ENCODER
        import segmentation_models_pytorch as smp

        return [f"{cls.__name__}:{enc}"
                for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()
                for enc in smp.encoders.get_encoder_names()]
    import timm

    return list(timm.list_models())


def _known(prefix: str, name: str) -> bool:
    if prefix == "torchvision":
        return name in _registry("torchvision")
    if prefix == "smp":
        import segmentation_models_pytorch as smp
        import timm

        arch, _, encoder = name.partition(":")
        return arch.lower() in smp.MODEL_ARCHITECTURES_MAPPING and (
            encoder in smp.encoders.get_encoder_names()
            or encoder.startswith("tu-") and bool(timm.is_model(encoder[3:])))
    import timm

    return bool(timm.is_model(name))  # accepts pretrained tags: resnet18.a1_in1k


def _spell(prefix: str, name: str, bare: bool) -> str:
    return name if bare and prefix == "timm" else f"{prefix}:{name}"


def suggestions(spec: str, n: int = 5) -> list[str]:
    """Registered MODEL strings close to ``spec``, the most likely first.

    The name's own registry is searched; an exact name in the other one comes first, and when
    the own registry has nothing close, the other one's close names are offered.
    """
    prefix, name = parse_model(spec)
    bare = ":" not in spec
    other = "timm" if prefix == "torchvision" else "torchvision"
    arch = name.split(".", 1)[0] if prefix == "timm" else name  # timm tags: arch.tag
    own = difflib.get_close_matches(arch, _registry(prefix), n)
    found = [_spell(prefix, m, bare) for m in own]
    theirs = _registry(other)
    if arch in theirs:
        found.insert(0, _spell(other, arch, bare))
    elif not own:
        found = [_spell(other, m, bare) for m in difflib.get_close_matches(arch, theirs, n)]
    return found[:n]


def _unknown_model(spec: str) -> FxPathError:
    prefix, name = parse_model(spec)
    close = suggestions(spec)
    hint = (f"did you mean {', '.join(close)}?" if close else
            f"no close match among the {len(_registry(prefix))} {prefix} models "
            f"({prefix}.{'models.' if prefix == 'torchvision' else ''}list_models() lists them)")
    where = "" if spec == name else f" in {spec!r}"
    return FxPathError(f"unknown {prefix} model {name!r}{where}; {hint}")


def build_model(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build MODEL (``name``, ``timm:name`` or ``torchvision:name``) with random weights.

    Returns the model in eval mode and its default per-sample input shape.

    Raises:
        FxPathError: an unknown prefix or name (with close matches), or any failure while
            building the model (the message names the model).
    """
    try:
        prefix, name = parse_model(spec)
    except argparse.ArgumentTypeError as exc:
        raise FxPathError(str(exc)) from None
    if prefix in ("pt2", "factory"):  # shape None: the model records none, --size gives it
        return (commands.load_exported(name) if prefix == "pt2"  # type: ignore[return-value]
                else commands.load_factory(name))
    if not _known(prefix, name):
        raise _unknown_model(spec)
    try:
        if prefix == "torchvision":
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
            shape: tuple[int, ...] = TORCHVISION_INPUT_SIZE
        elif prefix == "smp":
            import segmentation_models_pytorch as smp

            arch, _, encoder = name.partition(":")
            model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None)
            shape = SMP_INPUT_SIZE
        else:
            import timm

            model = timm.create_model(name, pretrained=False)
            shape = tuple(model.pretrained_cfg.get("input_size", TORCHVISION_INPUT_SIZE))
    except (KeyboardInterrupt, FxPathError):
        raise
    except Exception as exc:  # any failure of a registry's builder is the model's, not ours
        raise FxPathError(f"could not build {spec!r}: {type(exc).__name__}: {exc}") from exc
    return model.eval(), shape


# -- the parser -----------------------------------------------------------------------------

def _add_common(c: argparse.ArgumentParser) -> None:
    c.add_argument("model", metavar="MODEL", type=_model_spec,
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
    c.add_argument("--float64", action="store_true",
                   help="compute the path network in float64 (default: float32)")


def _add_subcommand(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    short, description = _SUBCOMMANDS[name]
    c = sub.add_parser(name, help=short, formatter_class=_Formatter,
                       description=f"{description}\n\n{_MODEL_HELP}",
                       epilog=f"examples:\n{_EXAMPLES[name]}\n\n{_EXIT_HELP}")
    _add_common(c)
    return c


def build_parser() -> argparse.ArgumentParser:
    """The ``fxpath`` argument parser (subcommands ``norm``, ``scores``, ``prune``,
    ``quantize``)."""
    from importlib.metadata import version

    __version__ = version("fxpath")

    p = argparse.ArgumentParser(
        prog="fxpath", formatter_class=_Formatter,
        description="Path-norms, path-magnitude scores and path-magnitude pruning of timm and "
                    f"torchvision\nReLU networks.\n\n{_MODEL_HELP}",
        epilog=f"examples:\n{_EXAMPLES[None]}\n\n{_EXIT_HELP}")
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
    c.add_argument("--save", metavar="FILE",
                   help="save every score tensor, keyed by state_dict name, to FILE.pt "
                        "(torch.save) or FILE.safetensors (default: print only)")
    _add_json(c)
    c = _add_subcommand(sub, "prune")
    c.add_argument("--amount", metavar="A", type=fraction, default=0.6,
                   help="fraction of the conv/linear weights to set to zero, in [0, 1] "
                        "(default: %(default)s)")
    c.add_argument("--criterion", default="path_magnitude",
                   choices=["path_magnitude", "magnitude"],
                   help="score of a weight: its share of path mass, or |w| "
                        "(default: %(default)s)")
    c.add_argument("--scope", default="global", choices=["global", "layer"],
                   help="one threshold over all weights, or one per tensor "
                        "(default: %(default)s)")
    c.add_argument("--steps", metavar="N", type=positive_int(), default=1,
                   help="prune-and-rescore rounds, N >= 1; the kept fraction shrinks "
                        "geometrically to 1 - A (default: %(default)s)")
    c.add_argument("--out", metavar="FILE",
                   help="save the pruned weights (a state dict, zeros in place) to FILE.pt or "
                        "FILE.safetensors (default: none)")
    c.add_argument("--export", metavar="FILE.pt2",
                   help="save the pruned model as an ExportedProgram (torch.export.save; "
                        "batch dimension dynamic where it exports) (default: none)")
    _add_json(c)
    _add_quantize(sub)
    _add_tools(sub)
    return p


def _add_json(c: argparse.ArgumentParser) -> None:
    c.add_argument("--json", action="store_true",
                   help="print the results as one JSON object (default: text)")


def _add_tools(sub: argparse._SubParsersAction) -> None:
    """The subcommands metric, check, zoo and plot."""
    from fxpath.tools import plot, zoo

    c = _add_subcommand(sub, "metric")
    c.add_argument("other", metavar="OTHER",
                   help="the other weights: a checkpoint (.pt, .safetensors) or a .pt2 of "
                        "MODEL's architecture")
    _add_json(c)
    _add_json(_add_subcommand(sub, "check"))
    short, description = _SUBCOMMANDS["zoo"]
    c = sub.add_parser("zoo", help=short, formatter_class=_Formatter, description=description,
                       epilog=f"examples:\n{_EXAMPLES['zoo']}\n\n{_EXIT_HELP}")
    zoo.add_arguments(c)
    short, description = _SUBCOMMANDS["plot"]
    c = sub.add_parser("plot", help=short, formatter_class=_Formatter,
                       description=f"{description}\n\n{_MODEL_HELP}",
                       epilog=f"examples:\n{_EXAMPLES['plot']}\n\n{_EXIT_HELP}")
    c.add_argument("kind", metavar="KIND", choices=plot.KINDS,
                   help="mass, scores, sparsity (of MODEL) or zoo (MODEL is then the CSV of "
                        "'fxpath zoo')")
    _add_common(c)
    c.add_argument("--out", metavar="FILE.png",
                   help="the picture (default: KIND_MODEL.png in the working directory)")
    c.add_argument("--amount", metavar="A", type=fraction, default=0.6,
                   help="sparsity: fraction of the conv/linear weights to prune "
                        "(default: %(default)s)")
    c.add_argument("--criterion", default="path_magnitude",
                   choices=["path_magnitude", "magnitude"],
                   help="sparsity: the pruning criterion (default: %(default)s)")
    c.add_argument("--scope", default="global", choices=["global", "layer"],
                   help="sparsity: one threshold or one per tensor (default: %(default)s)")


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
    c.add_argument("--out", metavar="FILE",
                   help="save the quantized copy's state_dict there (torch.save)")


# -- the subcommands ------------------------------------------------------------------------

def _norm(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
          dtype: torch.dtype) -> None:
    prog = compile_program(model, shape, dtype=dtype)
    norms = [prog.path_norm(q) for q in args.q]
    if args.json:
        return _print_json(commands.norm_result(args.model, shape, norms, dtype))
    for q, pn in zip(args.q, norms):
        print(f"l^{q:g} path-norm of {args.model} at {shape}: {pn.value:.10g} "
              f"(log10 {pn.log10:.10f})")


def _scores(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
            dtype: torch.dtype) -> None:
    scores = compile_program(model, shape, dtype=dtype).path_magnitude()
    if args.save:
        commands.save_tensors(scores, args.save)
    if args.json:
        result = commands.scores_result(args.model, shape, scores, args.top, dtype)
        return _print_json({**result, "saved": args.save})
    if args.save:
        print(f"saved {len(scores)} score tensors to {args.save}")
    mass = sorted(((float(s.sum()), n) for n, s in scores.items()), key=lambda t: (-t[0], t[1]))
    print(f"path mass fraction through each tensor of {args.model} at {shape} "
          f"(top {min(args.top, len(mass))} of {len(mass)}):")
    for m, n in mass[:args.top]:
        print(f"  {m:10.6f}  {n}")


def _prune(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> None:
    model = commands.as_module(model)
    report = prune(model, args.amount, shape, criterion=args.criterion, scope=args.scope,
                   steps=args.steps, dtype=dtype)
    saved = _save_pruned(args, model, shape)
    if args.json:
        return _print_json({**commands.prune_result(args.model, shape, report), **saved})
    steps = f", {args.steps} steps" if args.steps > 1 else ""
    print(f"{args.model} at {shape}: pruned {report.overall_sparsity:.1%} of the conv/linear "
          f"weights by {args.criterion} ({args.scope}{steps})")
    metric = report.metric
    print(f"certified l^1 path-metric to the dense model: {commands.metric_text(metric)}")
    print(commands.bound_line(metric, "pruned"))
    if "checkpoint" in saved:
        print(f"saved the pruned weights to {saved['checkpoint']}")
    if "exported" in saved:
        print(f"saved the pruned model as an ExportedProgram ({saved['exported_batch']}) to "
              f"{saved['exported']}")


def _save_pruned(args: argparse.Namespace, model: nn.Module,
                 shape: tuple[int, ...]) -> dict[str, str]:
    """``--out`` and ``--export`` of prune, pruning made permanent first."""
    if not (args.out or args.export):
        return {}
    commands.make_permanent(model)
    saved = {}
    if args.out:
        commands.save_tensors(model.state_dict(), args.out)
        saved["checkpoint"] = args.out
    if args.export:
        saved["exported_batch"] = commands.export_program(model, shape, args.export)
        saved["exported"] = args.export
    return saved


def _quantize(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
              dtype: torch.dtype) -> None:
    scheme = args.scheme
    copy, report = quantize(model, shape, scheme, per_channel=args.per_channel,
                            rounding=args.rounding, biases=args.biases, fold_bn=args.fold_bn,
                            budget=args.budget, layer_metrics=args.top > 0, dtype=dtype)
    granularity = "per channel" if args.per_channel else "per tensor"
    what = f"{scheme}" if args.budget is None else f"budget {args.budget:g}, integer bits"
    print(f"{args.model} at {shape}: quantized {len(report.layers)} conv/linear layers "
          f"({what}, {granularity}, {args.rounding}), {report.average_bits:.3f} bits per weight")
    metric = report.metric
    print(f"certified l^1 path-metric to the model: {commands.metric_text(metric)}")
    if report.budget is not None:
        print(f"budget {report.budget:g}: met with margin {report.margin:.6g} after "
              f"{report.rounds} certified check(s)")
    if args.top > 0:
        top = sorted(report.layers.values(), key=lambda r: (-(r.share or 0.0), r.layer))
        print(f"layers with the largest share of the metric (top {min(args.top, len(top))} of "
              f"{len(top)}; each certified alone):")
        for r in top[:args.top]:
            print(f"  {r.share:10.6f}  {r.bits} bits  {r.layer}")
    if args.out:
        torch.save(copy.state_dict(), args.out)
        print(f"saved the quantized state_dict to {args.out}")


def _metric(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
            dtype: torch.dtype) -> None:
    other = (commands.load_exported(args.other)[0] if args.other.endswith(".pt2")
             else commands.load_state(args.other))
    prog = compile_program(model, shape, dtype=dtype)
    metric = prog.path_metric(other)
    if args.json:
        return _print_json(commands.metric_result(args.model, args.other, shape, metric,
                                                  prog.path_norm()))
    print(f"certified l^1 path-metric between {args.model} and {args.other} at {shape}: "
          f"{commands.metric_text(metric)}")
    print(commands.bound_line(metric, "other"))


def _check(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> int:
    report = commands.support_report(model, shape)
    if args.json:
        _print_json({"model": args.model, "input_shape": list(shape), **report.as_dict()})
    else:
        print("\n".join(commands.support_text(args.model, shape, report)))
    return EXIT_OK if report.supported else EXIT_UNSUPPORTED


def _plot(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
          dtype: torch.dtype) -> None:
    from fxpath.tools import plot

    out = args.out or commands.default_picture(args.kind, args.model)
    if args.kind == "sparsity":
        report = prune(commands.as_module(model, "plot sparsity"), args.amount, shape,
                       criterion=args.criterion, scope=args.scope, dtype=dtype)
        path = plot.plot_sparsity(report.sparsity, report.overall_sparsity, out, args.model)
    else:
        scores = compile_program(model, shape, dtype=dtype).path_magnitude()
        draw = plot.plot_mass if args.kind == "mass" else plot.plot_scores
        path = draw(scores, out, f"{args.model} at {shape}")
    print(f"wrote {path}")


def _print_json(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2))


_Command = Callable[[argparse.Namespace, nn.Module, tuple[int, ...], torch.dtype], "int | None"]
_COMMANDS: dict[str, _Command] = {"norm": _norm, "scores": _scores, "prune": _prune,
                                  "quantize": _quantize, "metric": _metric, "check": _check,
                                  "plot": _plot}


def _load(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...]]:
    """MODEL built (random weights of --seed), --checkpoint loaded, --size applied."""
    torch.manual_seed(args.seed)
    model, shape = build_model(args.model)
    if args.checkpoint:
        if not isinstance(model, nn.Module):
            raise FxPathError("--checkpoint does not apply to a .pt2 MODEL: an "
                              "ExportedProgram holds its own weights")
        commands.load_checkpoint(model, args.checkpoint)
    shape = tuple(args.size) if args.size else shape
    if shape is None:
        raise FxPathError(f"{args.model} records no input size: give the per-sample input "
                          "shape with --size, e.g. --size 3 224 224")
    return model, shape


def _run(args: argparse.Namespace) -> int:
    if args.command == "zoo":
        from fxpath.tools import zoo

        return zoo.run(args)
    if args.command == "plot":
        from fxpath.tools import plot

        plot.require_matplotlib()  # before minutes of work on the model, not after
        if args.kind == "zoo":
            print(f"wrote {plot.plot_zoo(args.model, args.out or 'zoo.png')}")
            return EXIT_OK
    model, shape = _load(args)
    dtype = torch.float64 if args.float64 else torch.float32
    t0 = time.perf_counter()
    code = _COMMANDS[args.command](args, model, shape, dtype)
    sys.stdout.flush()  # a closed pipe fails here, inside main, not at interpreter exit
    print(f"({time.perf_counter() - t0:.2f} s, {dtype})", file=sys.stderr)
    return code or EXIT_OK


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _internal_error(exc: BaseException) -> int:
    print(f"fxpath: internal error, please report: {type(exc).__name__}: {exc}\n"
          "This is a bug in fxpath or in a library it calls, not a problem with your command "
          "line. Please report it with the command line, the versions of torch, torchvision "
          "and timm, and the traceback below.", file=sys.stderr)
    traceback.print_exc()
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxpath`` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code = _run(args)
    except FxPathError as exc:
        float64 = "dtype=torch.float64" in str(exc) and not getattr(args, "float64", True)
        hint = " (here: add --float64)" if float64 else ""
        print(f"fxpath: {exc}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fxpath: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fxpath scores resnet18 --top 100 | head -3`
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        if _out_of_memory(exc):
            size = getattr(args, "size", None)
            print(f"fxpath: out of memory for {getattr(args, 'model', args.command)} at input "
                  f"shape {tuple(size) if size else 'default'}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return _internal_error(exc)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
