"""Evaluation and prediction with a trained model: accuracy, confusion matrix, top-k."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetkitValueError
from .checkpoint import read_model_file
from .data import batch_loader, load_image
from .distributed import DistInfo, all_sum
from .transforms import InputSpec, prepare_batch


@dataclass
class EvalResult:
    """Accuracy (a fraction), mean cross-entropy, and the confusion matrix (rows: true class)."""

    accuracy: float
    loss: float
    confusion: torch.Tensor
    classes: list[str]

    def format_confusion(self) -> str:
        """The confusion matrix as aligned text, true classes down, predictions across."""
        names = [c[:8] for c in self.classes]
        width = max(5, *(len(n) for n in names), len(str(int(self.confusion.max()))))
        head = " " * (width + 2) + " ".join(f"{n:>{width}}" for n in names)
        rows = [f"{n:>{width}}  " + " ".join(f"{int(v):>{width}}" for v in row)
                for n, row in zip(names, self.confusion)]
        return "\n".join(["true \\ predicted", head, *rows])


def autocast(device: torch.device, amp: bool):  # noqa: ANN201
    """bf16 autocast on CPU (and on GPUs that support it, else fp16) when ``amp``; a no-op otherwise."""
    if not amp:
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, spec: InputSpec, device: torch.device | str = "cpu",
             batch_size: int = 256, amp: bool = False, channels_last: bool = False, workers: int = 0,
             dist_info: DistInfo = DistInfo()) -> EvalResult:
    """Accuracy, loss and confusion matrix of ``model`` on ``dataset`` (eval mode).

    Under torchrun each rank takes every N-th sample and the counts are summed, so
    every rank returns the result for the whole dataset.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    k = len(dataset.classes)
    confusion = torch.zeros(k, k, dtype=torch.float64, device=device)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
    mine = list(range(dist_info.rank, len(dataset), dist_info.world))
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    for images, labels, _ in batch_loader(dataset, batches, workers):
        x = prepare_batch(images, spec, device, channels_last)
        labels = labels.to(device)
        with autocast(device, amp):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
        pred = logits.argmax(1)
        confusion.view(-1).index_add_(0, labels * k + pred, torch.ones_like(labels, dtype=torch.float64))
    totals = all_sum(torch.cat([confusion.view(-1), loss_sum]), dist_info).cpu()
    model.train(was_training)
    confusion = totals[:-1].view(k, k).round().long()
    n = int(confusion.sum())
    acc = float(confusion.diag().sum()) / n if n else float("nan")
    return EvalResult(acc, float(totals[-1]) / n if n else float("nan"), confusion, list(dataset.classes))


def load_trained(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model trained by ``resnetkit train`` from ``best.safetensors`` (or ``last.pt``,
    or the run folder) and return it in eval mode with its metadata (classes, input spec)."""
    from ..registry import create_model

    state, meta = read_model_file(path)
    if not meta.get("model"):
        raise ResnetkitValueError(f"{path} does not record which model it holds; it was trained from a Python model "
                                  "object, so rebuild that model and load the weights with load_state_dict")
    model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_kwargs", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # torch lists every bad key over many lines: keep the first problem
        lines = str(e).strip().splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0]).strip()
        raise ResnetkitValueError(f"{path}: its weights do not fit the model its metadata names ({meta['model']}, "
                                  f"{meta['num_classes']} classes): {first[:200]}") from e
    return model.to(device).eval(), meta


# Training data whose mean pixel is below this has dark backgrounds (MNIST 0.13, Fashion-MNIST 0.29;
# photo datasets such as CIFAR-10 average about 0.47).
DARK_DATA_MEAN = 0.35


def bright_background(image: torch.Tensor, spec: InputSpec) -> str | None:
    """Why ``image`` (uint8 C×H×W) will mislead a model trained on dark backgrounds, or None.

    The background is the median of the image's border pixels; MNIST digits are
    white on black, a digit drawn in Paint is black on white.
    """
    data_mean = sum(spec.mean) / len(spec.mean)
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1).float() / 255
    background = border.median().item()
    if data_mean >= DARK_DATA_MEAN or background <= 0.5:
        return None
    return (f"its background is bright (border pixels {background:.2f} on a 0-1 scale) but the model was trained "
            f"on dark backgrounds (mean pixel {data_mean:.2f}: light digits on black, as MNIST); invert it "
            "(resnetkit predict --invert, predict(..., invert=True))")


@torch.no_grad()
def predict(model: nn.Module, images: Sequence[str | os.PathLike], meta: dict[str, Any], topk: int = 5,
            device: torch.device | str = "cpu", invert: bool = False) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) for each image file, preprocessed as in training.

    ``invert`` flips every pixel (255 − v) first, for dark-on-light images given to a model
    trained on light-on-dark ones; without it, such an image gets a warning.
    """
    spec = InputSpec.from_dict(meta["input"])
    mode = "L" if spec.data_chans == 1 else "RGB"
    paths = [Path(p) for p in images]
    for p in paths:
        if p.is_dir():
            raise ResnetkitValueError(f"{p} is a folder, not an image file; pass the image files themselves")
        if not p.is_file():
            raise FileNotFoundError(f"image {p} does not exist")
    x = torch.stack([load_image(p, mode, spec.data_size or spec.image_size) for p in paths])
    if invert:
        x = 255 - x
    for p, image in zip(paths, x):
        if not invert and (why := bright_background(image, spec)):
            warnings.warn(f"{p}: {why}", UserWarning, stacklevel=2)
    model.eval()
    probs = model(prepare_batch(x, spec, device)).float().softmax(1)
    k = min(topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    classes = meta["classes"]
    return [[(classes[i], float(v)) for v, i in zip(vals, idx)] for vals, idx in zip(top.values, top.indices)]
