"""MODEL specs build random-weight models without touching the network."""

from __future__ import annotations

import pytest
import torch.hub

from fxpath.tools.models import build_model


def test_torchvision_segmentation_models_get_random_backbones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``torchvision:fcn_resnet50`` used to fetch ImageNet backbone weights (the builder's
    ``weights_backbone`` default), which fails offline; every weight is random now."""
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model, shape = build_model("torchvision:fcn_resnet50")
    assert type(model).__name__ == "FCN" and shape == (3, 224, 224)
