"""Why a model predicts what it does: Grad-CAM heat maps (Selvaraju et al. 2017) through ``torchcam``.

The target layer is chosen per model, the same way for every family: the
module of the last ``feature_info`` level (the last stage's output, C5 for
the ImageNet nets, the last residual stage for the CIFAR and d2l nets), where
the features are still spatial and already about classes. ``rk.cam`` returns
the heat map; ``overlay`` puts it over the image as ``resnetkit predict --cam``
saves it. ``torchcam`` (PyPI, the ``explain`` extra) computes the maps.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetkitValueError


def cam_layer(model: nn.Module) -> str:
    """The name of the layer whose Grad-CAM ``cam`` computes: the last feature level's module."""
    info = getattr(model, "feature_info", None)
    if info:
        return list(info)[-1]["module"]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ResnetkitValueError(f"{type(model).__name__} has no convolution to take a Grad-CAM of; "
                                  "pass layer='<module name>'")
    return convs[-1]


def cam(model: nn.Module, image: torch.Tensor, class_idx: int | None = None,
        layer: str | None = None) -> torch.Tensor:
    """Grad-CAM of ``model`` on one preprocessed ``image`` (C×H×W or 1×C×H×W float tensor).

    ``class_idx``: the class to explain (default: the predicted one). ``layer``: a
    module name (default :func:`cam_layer`). Returns an H×W float tensor in [0, 1],
    upsampled to the image's size; ``.class_idx`` and ``.layer`` say what it explains.
    """
    from ..train._deps import require

    require("torchcam", extra="explain", purpose="Grad-CAM")
    from torchcam.methods import GradCAM

    if not isinstance(image, torch.Tensor) or not image.is_floating_point() or image.ndim not in (3, 4):
        raise ResnetkitValueError("cam() takes one preprocessed image: a float tensor C×H×W (or 1×C×H×W)")
    x = image if image.ndim == 4 else image[None]
    if x.shape[0] != 1:
        raise ResnetkitValueError(f"cam() explains one image at a time, got a batch of {x.shape[0]}")
    layer = layer or cam_layer(model)
    was_training = model.training
    model.eval()
    try:
        with GradCAM(model, target_layer=layer, input_shape=tuple(x.shape[1:])) as extractor:
            with torch.enable_grad():
                scores = model(x.detach().requires_grad_(True))
                if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
                    raise ResnetkitValueError("cam() needs a classifier (logits N×classes); a features_only "
                                              "backbone has no class to explain")
                target = int(scores.argmax(1)) if class_idx is None else int(class_idx)
                heat = extractor(class_idx=target, scores=scores)[0]
    finally:
        model.train(was_training)
    heat = F.interpolate(heat[None].float(), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    heat = torch.nan_to_num(heat).clamp_min(0)
    heat = heat / heat.max() if heat.max() > 0 else heat
    out = heat.detach()
    out.class_idx, out.layer = target, layer  # type: ignore[attr-defined]
    return out


def overlay(image: Any, heat: torch.Tensor, alpha: float = 0.5) -> Any:
    """A PIL image: ``heat`` (H×W in [0, 1]) in the jet colour map over ``image`` (a PIL image), at the image's size."""
    from PIL import Image
    from torchcam.utils import overlay_mask

    mask = Image.fromarray((heat.clamp(0, 1).numpy() * 255).astype("uint8"), mode="L")
    return overlay_mask(image.convert("RGB"), mask, alpha=alpha)
