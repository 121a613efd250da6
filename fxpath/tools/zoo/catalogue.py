"""The zoo's catalogue: the classifiers of timm and torchvision, their architecture keys, the
selection (one per architecture, families, name globs) and sharding of the list, each model's
default input size, and building a model with random weights."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from fxpath.errors import ArgumentError

__all__ = ["SOURCES", "ZooModel", "architecture", "build", "catalog", "default_input_size",
           "natural_key", "parse_shard", "select", "shard"]

SOURCES = ("timm", "torchvision")

#: timm name tokens that pick a size within one architecture (dropped by `architecture`)
_SIZE_WORDS = frozenset({"atto", "femto", "pico", "nano", "tiny", "small", "medium", "base",
                         "large", "xlarge", "huge", "giant", "gigantic", "xxs", "xs", "s", "m",
                         "l", "xl", "xxl", "mini", "micro"})
#: torchvision builders do not record an input size; its weights' transforms do
_TORCHVISION_SIZE = (3, 224, 224)


@dataclass(frozen=True)
class ZooModel:
    """One classifier of a registry: its name, registry, family and architecture key."""

    name: str
    source: str
    family: str
    arch: str

    @property
    def spec(self) -> str:
        """The MODEL string of the command line: ``timm:NAME`` or ``torchvision:NAME``."""
        return f"{self.source}:{self.name}"


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key ordering digit runs by value: resnet18 < resnet34 < resnet101."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower()))


def architecture(name: str) -> str:
    """The architecture key of a model name: depth, width, resolution and size words removed.

    Name tokens (split at ``_``) that are size words (``tiny``, ``base``, ``l``, ...) or start
    with a digit (``050``, ``224``, ``32x4d``) are dropped, and in the others every digit run
    not preceded by ``v`` (a version: ``mobilenetv2``) becomes ``#``: resnet18, resnet50 ->
    ``resnet#``; resnet50d -> ``resnet#d``; regnetx_002 -> ``regnetx``; convnext_tiny ->
    ``convnext``; vgg11_bn -> ``vgg#_bn``; efficientnet_b3 -> ``efficientnet_b#``.
    """
    tokens = [re.sub(r"(?<!v)\d+", "#", t) for t in name.split(".", 1)[0].split("_")]
    kept = [t for i, t in enumerate(tokens)
            if i == 0 or not (t in _SIZE_WORDS or t.startswith("#"))]
    return "_".join(kept)


def _timm_models() -> list[ZooModel]:
    import timm
    from timm.models import _registry

    modules = getattr(_registry, "_model_to_module", {})
    return [ZooModel(n, "timm", modules.get(n, "timm"), architecture(n))
            for n in timm.list_models()]


def _torchvision_models() -> list[ZooModel]:
    import torchvision

    out = []
    for n in torchvision.models.list_models(module=torchvision.models):
        family = torchvision.models.get_model_builder(n).__module__.rsplit(".", 1)[-1]
        out.append(ZooModel(n, "torchvision", family, architecture(n)))
    return out


def catalog(sources: Sequence[str] = SOURCES) -> list[ZooModel]:
    """Every classifier of ``sources`` (``"timm"``, ``"torchvision"``), sorted by registry and
    name (natural order)."""
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ArgumentError(f"unknown zoo source(s) {sorted(unknown)}: use {SOURCES}")
    models: list[ZooModel] = []
    if "timm" in sources:
        models += _timm_models()
    if "torchvision" in sources:
        models += _torchvision_models()
    return sorted(models, key=lambda m: (SOURCES.index(m.source), natural_key(m.name)))


def select(models: Iterable[ZooModel], *, every: bool = False, families: Sequence[str] = (),
           patterns: Sequence[str] = ()) -> list[ZooModel]:
    """Restrict ``models``: to ``families`` and name ``patterns`` (shell globs, any may match),
    then, unless ``every``, to one model per (registry, family, architecture): the first in
    natural order, usually the smallest (resnet18 for ``resnet#``)."""
    kept = [m for m in models
            if (not families or any(fnmatch.fnmatchcase(m.family, f) for f in families))
            and (not patterns or any(fnmatch.fnmatchcase(m.name, p)
                                     or fnmatch.fnmatchcase(m.spec, p) for p in patterns))]
    if every:
        return kept
    seen: set[tuple[str, str, str]] = set()
    out = []
    for m in sorted(kept, key=lambda m: (SOURCES.index(m.source), natural_key(m.name))):
        key = (m.source, m.family, m.arch)
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``: shard ``i`` (0-based) of ``n``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ArgumentError(f"a shard is 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    if not 0 <= i < n:
        raise ArgumentError(f"shard {text!r}: the index must be in [0, {n}) (0-based), got {i}")
    return i, n


def shard(models: Sequence[ZooModel], index: int, count: int) -> list[ZooModel]:
    """Shard ``index`` of ``count``: every ``count``-th model of the list sorted by registry and
    name, starting at ``index``. Deterministic, disjoint, and together the whole list; each
    shard gets a mix of families (so of costs)."""
    if not 0 <= index < count:
        raise ArgumentError(f"shard index must be in [0, {count}), got {index}")
    ordered = sorted(models, key=lambda m: (SOURCES.index(m.source), natural_key(m.name)))
    return ordered[index::count]


def default_input_size(model: nn.Module | None, m: ZooModel) -> tuple[int, ...]:
    """timm's ``pretrained_cfg["input_size"]``; for torchvision, the model's own ``image_size``
    when it has one (vision transformers: the default weights of ``vit_h_14`` are for another
    size than the model built without them), else its default weights' crop size (299 for
    inception_v3), else 3x224x224."""
    if m.source == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        return tuple(int(d) for d in cfg.get("input_size", _TORCHVISION_SIZE))
    side = getattr(model, "image_size", None)
    if isinstance(side, int):
        return (3, side, side)
    try:
        import torchvision

        crop = torchvision.models.get_model_weights(m.name).DEFAULT.transforms().crop_size
        return (3, int(crop[0]), int(crop[-1]))
    except Exception:  # builders without weights: the common ImageNet size
        return _TORCHVISION_SIZE


def build(m: ZooModel, device: str | torch.device | None = None) -> nn.Module:
    """The model with random weights (nothing downloaded), in eval mode, on ``device``
    (``"meta"``: no memory, no initialization)."""
    import warnings

    ctx = torch.device(device) if device is not None else _nullcontext()
    with ctx, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # builders' deprecation notes, not the model's status
        if m.source == "timm":
            import timm

            model = timm.create_model(m.name, pretrained=False)
        else:
            import torchvision

            model = torchvision.models.get_model(m.name, weights=None)
    return model.eval()


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
