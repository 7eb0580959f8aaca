"""Where a registered model's published weights come from, for users who ask for a download.

resnetkit never downloads: ``pretrained`` is a local file. torchvision users write
``pretrained=True`` or ``weights="IMAGENET1K_V1"``; they get one line naming the
file to fetch (torchvision's and timm's files load as they are).
"""
from __future__ import annotations

# torchvision's checkpoint hashes: IMAGENET1K_V1, IMAGENET1K_V2 (None: no V2), from torchvision.models
TORCHVISION = {
    "resnet18": ("f37072fd", None), "resnet34": ("b627a593", None), "resnet50": ("0676ba61", "11ad3fa6"),
    "resnet101": ("63fe2227", "cd907fc2"), "resnet152": ("394f9c45", "f82ba261"),
    "resnext50_32x4d": ("7cdf4587", "1a0047aa"), "resnext101_32x8d": ("8ba56ff5", "110c445d"),
    "resnext101_64x4d": ("173b62eb", None), "wide_resnet50_2": ("95faca4d", "9ba9bcbe"),
    "wide_resnet101_2": ("32ee1156", "d733dc28"), "mobilenet_v2": ("b0353104", "7ebf99e0"),
}
# timm's pretrained tags (Hugging Face repositories timm/<tag>, file model.safetensors)
TIMM = {"ghostnet_100": "ghostnet_100.in1k", "resnet50d": "resnet50d.ra2_in1k"}


def weights_source(name: str, tag: str | None = None) -> str:
    """How to get a weights file for ``name`` (``tag``: torchvision's ``IMAGENET1K_V1``/``_V2``)."""
    if name in TORCHVISION:
        v1, v2 = TORCHVISION[name]
        version = "V2" if tag and tag.upper().endswith("V2") and v2 else "V1"
        file = f"{name}-{v1 if version == 'V1' else v2}.pth"
        return (f"pass pretrained='path/to/{file}', torchvision's IMAGENET1K_{version} file "
                f"(https://download.pytorch.org/models/{file})")
    if name in TIMM:
        return (f"pass pretrained='path/to/model.safetensors' from timm's {TIMM[name]} "
                f"(https://huggingface.co/timm/{TIMM[name]})")
    return (f"{name} has no published weights: train it with `resnetkit train --model {name}` and pass "
            f"pretrained='runs/train/best.safetensors'")


def pretrained_error(name: str, asked: str, tag: str | None = None) -> str:
    """The one-line answer to ``pretrained=True`` / ``weights=...`` (``asked`` is what the user wrote)."""
    return (f"create_model({name!r}, {asked}): resnetkit never downloads; pretrained takes a local checkpoint "
            f"file: {weights_source(name, tag)}")
