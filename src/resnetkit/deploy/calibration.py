"""Calibration data for int8 and ``dtype="auto"``, in whatever form the user has it.

A tensor, a DataLoader or any iterable of batches or (inputs, targets) pairs,
or a resnetkit data spec (``"mnist5k"``, a data folder): the same data
``resnetkit train`` reads, with the same preprocessing (``prepare_batch`` and
the run's ``InputSpec``), so int8 ranges are observed on what the model sees.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from ..errors import ResnetkitValueError

DEFAULT_IMAGES = 512  # enough for stable int8 ranges; NNCF's default subset is 300


def _check_batch(x: Any, chw: Sequence[int] | None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ResnetkitValueError("calibration must be a tensor, an iterable of tensors or (inputs, targets) pairs, "
                                  f"or a data spec such as 'mnist5k'; got an item of type {type(x).__name__}")
    if x.ndim != 4:
        raise ResnetkitValueError(f"calibration batches must be N×C×H×W, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ResnetkitValueError(f"calibration batches must be float tensors preprocessed as the model's inputs, "
                                  f"got {x.dtype}; or pass a data spec (e.g. 'mnist5k') to have resnetkit preprocess it")
    if chw is not None and tuple(x.shape[1:]) != tuple(chw):
        raise ResnetkitValueError(f"calibration batches are {'×'.join(map(str, x.shape[1:]))} but the model is built for "
                                  f"{'×'.join(map(str, chw))} inputs; resize them, or pass input_size to match")
    return x.detach().float().cpu()


def spec_for(dataset: Any, in_chans: int, image_size: Sequence[int] | None) -> Any:
    """The preprocessing ``resnetkit train`` would use for ``dataset`` and a model taking ``in_chans``."""
    from ..train.transforms import InputSpec

    mean, std = dataset.channel_stats()
    size = tuple(image_size) if image_size else tuple(dataset.image_size)
    return InputSpec(in_chans, dataset.channels, size, mean, std,
                     tuple(dataset.image_size) if dataset.image_size else None)


def from_data_spec(data: str | os.PathLike, in_chans: int, image_size: Sequence[int] | None, spec: Any = None,
                   max_images: int = DEFAULT_IMAGES, split: str = "train", batch_size: int = 32) -> list[torch.Tensor]:
    """``max_images`` images of ``data`` (a fixed random subset), preprocessed as in training."""
    from ..train.data import batch_loader, load_dataset
    from ..train.transforms import prepare_batch

    dataset = load_dataset(data, split, image_size=tuple(image_size) if image_size else None)
    spec = spec or spec_for(dataset, in_chans, image_size)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:max_images].tolist()
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [prepare_batch(images, spec) for images, _, _ in batch_loader(dataset, batches)]


def calibration_batches(calibration: Any, chw: Sequence[int] | None = None, spec: Any = None,
                        max_images: int = DEFAULT_IMAGES, batch_size: int = 32,
                        in_chans: int | None = None) -> list[torch.Tensor]:
    """``calibration`` as a list of float32 N×C×H×W batches, at most ``max_images`` images in all.

    ``chw`` is the model's (C, H, W) when known: batches must match it, and a
    data spec is resized to it. ``spec`` (an ``InputSpec``, e.g. from a trained
    run's metadata) overrides the preprocessing derived from the data. Without
    ``chw`` a data spec keeps its own image size and gets ``in_chans`` channels.
    """
    if isinstance(calibration, (str, os.PathLike)):
        in_chans = spec.in_chans if spec is not None else (chw[0] if chw is not None else in_chans)
        if in_chans is None:
            raise ResnetkitValueError("a data spec as calibration needs the model's input size: pass input_size=(N, C, H, W)")
        size = tuple(chw[1:]) if chw is not None else None
        out = from_data_spec(calibration, in_chans, size, spec, max_images, batch_size=batch_size)
    elif isinstance(calibration, torch.Tensor):
        out = list(_check_batch(calibration, chw)[:max_images].split(batch_size))
    else:
        try:
            items = iter(calibration)
        except TypeError:
            raise ResnetkitValueError(f"calibration must be a tensor, an iterable of batches or a data spec such as "
                                      f"'mnist5k', got {type(calibration).__name__}") from None
        out, n = [], 0
        for item in items:
            x = item[0] if isinstance(item, (list, tuple)) else item
            x = _check_batch(x, chw)[:max_images - n]
            out.append(x)
            n += len(x)
            if n >= max_images:
                break
    if not out or not sum(len(b) for b in out):
        raise ResnetkitValueError("calibration is empty: pass a few hundred representative inputs (e.g. training images)")
    return out
