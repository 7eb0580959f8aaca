"""Training, evaluation and prediction (``resnetkit train`` / ``eval`` / ``predict``).

Importing this package needs only torch and numpy; tqdm, matplotlib, pillow and
mlxtend (the ``resnetkit[train]`` extra) are imported when first used.
"""
from ._deps import MissingExtraError
from .config import TrainConfig
from .data import ArrayDataset, DataError, ImageFolderDataset, load_dataset
from .evaluate import EvalResult, evaluate, load_trained, predict
from .trainer import Trainer, TrainingDiverged, TrainResult, fit
from .transforms import InputSpec

__all__ = ["TrainConfig", "Trainer", "TrainResult", "TrainingDiverged", "fit", "evaluate", "predict",
           "load_trained", "load_dataset", "ArrayDataset", "ImageFolderDataset", "InputSpec", "EvalResult",
           "DataError", "MissingExtraError"]
