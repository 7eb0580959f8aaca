"""resnetkit: residual CNNs on PyTorch - exact torchvision/timm models, backbones,
summaries, training and fast CPU inference."""
from . import blocks, models  # noqa: F401  (importing models registers them)
from .blocks import *  # noqa: F401,F403
from .blocks import __all__ as _blocks_all
from .errors import ResnetkitError
from .features import FeatureInfo
from .detection import with_fpn
from .weights import LoadResult, WeightsError, load_weights, save_weights
from .registry import UnknownModelError, create_model, list_models, register_model
from .models.mmdet import from_mmdet_config
from .deploy import export, export_onnx, load_inference, optimize_for_inference, quantize_int8
from .train import TrainConfig, Trainer, fit  # torch only: tqdm/matplotlib/mlxtend load on use
from .inspect import explain, summary
from .inspect.draw import draw
from .inspect.view import View, view
from .inspect.cam import cam
from .tables import TableError, from_table, to_table

from ._version import __version__

__all__ = ["create_model", "list_models", "register_model", "register_plugin", "UnknownModelError",
           "FeatureInfo", "optimize_for_inference", "quantize_int8", "export_onnx", "export", "load_inference",
           "summary", "explain", "draw", "view", "View", "from_table", "to_table", "TableError", *_blocks_all]
__all__ += ["Trainer", "TrainConfig", "fit"]
__all__ += ["load_weights", "save_weights", "WeightsError", "LoadResult"]
__all__ += ["with_fpn", "cam"]
__all__ += ["ResnetkitError"]
__all__ += ["from_mmdet_config"]
