"""MODEL strings of the ``fxpath`` command line: their forms (`parse_model`), the models they
build (`build_model`: timm, torchvision, segmentation_models_pytorch, ``module.path:factory``,
a saved ``.pt2``) and the close registered names offered for a misspelt one (`suggestions`).
"""

from __future__ import annotations

import argparse
import difflib
import inspect

import torch.nn as nn

from fxpath.errors import FxPathError
from fxpath.tools import commands

__all__ = ["SMP_INPUT_SIZE", "TORCHVISION_INPUT_SIZE", "build_model", "parse_model",
           "suggestions"]

#: input shape of torchvision models (their builders do not record one)
TORCHVISION_INPUT_SIZE = (3, 224, 224)
_PREFIXES = ("timm", "torchvision", "smp")
#: input shape of segmentation_models_pytorch models (smp:ARCH:ENCODER)
SMP_INPUT_SIZE = (3, 256, 256)


# -- MODEL strings --------------------------------------------------------------------------

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
        raise argparse.ArgumentTypeError(_not_a_model(spec, prefix))
    if not name.strip():
        raise argparse.ArgumentTypeError(f"empty model name in {spec!r}")
    arch, colon, encoder = name.partition(":")
    if prefix == "smp" and not (colon and arch.strip() and encoder.strip()
                                and ":" not in encoder):
        raise argparse.ArgumentTypeError(
            f"segmentation_models_pytorch models are smp:ARCH:ENCODER (smp:Unet:resnet34), "
            f"got {spec!r}")
    return prefix, name


def _not_a_model(spec: str, prefix: str) -> str:
    """Why MODEL ``prefix:...`` is neither a registry nor an importable ``module.path:factory``:
    a dotted prefix is a module path whose import failed (and why); another one is an unknown
    prefix, with the import's failure when it reads as a module."""
    reason = commands.factory_import_error(spec) if commands.FACTORY.fullmatch(spec) else ""
    forms = ("use a timm name, timm:NAME, torchvision:NAME, smp:ARCH:ENCODER, "
             "module.path:factory (an importable module) or a .pt2 file")
    if reason and "." in prefix:
        return (f"cannot import {prefix!r} for MODEL {spec!r} (module.path:factory): {reason}; "
                "run from the directory that holds the module, or install its package")
    if reason:
        return (f"unknown model prefix {prefix + ':'!r} in {spec!r}: not a registry, and as "
                f"module.path:factory, cannot import {prefix!r}: {reason}; {forms}")
    return f"unknown model prefix {prefix + ':'!r} in {spec!r}: {forms}"


# -- the registries -----------------------------------------------------------------------

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

            builder = torchvision.models.get_model_builder(name)
            # random weights throughout: segmentation and detection builders would otherwise
            # fetch ImageNet weights for their backbone (weights_backbone's default)
            extra = ({"weights_backbone": None}
                     if "weights_backbone" in inspect.signature(builder).parameters else {})
            model = builder(weights=None, **extra)
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
