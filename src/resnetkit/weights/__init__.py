"""Weight files: load checkpoints from torchvision, timm, mmdet/mmpretrain and resnetkit safely;
save safetensors.

>>> import tempfile, os, torch, resnetkit as rk
>>> net = rk.create_model("resnet18", num_classes=3)
>>> path = rk.save_weights(net, os.path.join(tempfile.mkdtemp(), "r18.safetensors"))
>>> r = rk.load_weights(rk.create_model("resnet18", num_classes=3), path)
>>> r.missing_keys, r.unexpected_keys
([], [])
"""
from .io import WeightsError, find_state_dict, read_state_dict, save_weights
from .layouts import LAYOUTS, Layout
from .load import LoadResult, load_weights

__all__ = ["load_weights", "save_weights", "read_state_dict", "find_state_dict", "WeightsError", "LoadResult",
           "Layout", "LAYOUTS"]
