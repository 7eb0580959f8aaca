"""Batch-level input pipeline: sample order, augmentation, uint8 -> normalised model input.

All randomness here is a pure function of (seed, epoch, sample index), never of a
global RNG. That is what makes ``--resume`` continue exactly and makes a torchrun
job see the same global batches and the same augmentation as a single process.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ResnetkitValueError

_ORDER, _SHIFT, _CROP = 0, 1, 2  # purposes mixed into the seed so that order and augmentation are independent
CROP_PCT = 0.875  # torchvision's reference evaluation: resize to 256, centre crop 224


def _generator(seed: int, epoch: int, purpose: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, purpose]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """This rank's sample indices for one epoch.

    One permutation per (seed, epoch), padded to a multiple of ``world`` and dealt
    round-robin: with a per-rank batch of B/world, global batch i of a torchrun job
    holds exactly the samples of batch i of a single process with batch B.
    """
    perm = torch.randperm(n, generator=_generator(seed, epoch, _ORDER))
    pad = (-n) % world
    if pad:
        perm = torch.cat([perm, perm[:pad]])
    return perm[rank::world].tolist()


def epoch_shifts(n: int, max_shift: int, seed: int, epoch: int) -> torch.Tensor | None:
    """Per-sample (dy, dx) translations in [-max_shift, max_shift] for one epoch, or None."""
    if max_shift <= 0:
        return None
    return torch.randint(-max_shift, max_shift + 1, (n, 2), generator=_generator(seed, epoch, _SHIFT))


def epoch_crops(indices: list[int], size: tuple[int, int], seed: int, epoch: int) -> list[tuple[int, ...]]:
    """Per-sample (top, left, height, width, flip) of torchvision's RandomResizedCrop (scale 0.08-1, ratio
    3/4-4/3) on a ``size`` image, plus a horizontal flip bit: a pure function of (seed, epoch, sample)."""
    from torchvision.transforms import RandomResizedCrop

    image = torch.empty(1, *size)
    boxes = []
    for i in indices:
        g = _generator(seed, epoch * 1_000_003 + int(i), _CROP)
        with torch.random.fork_rng(devices=[]):   # get_params draws from torch's global RNG
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
            top, left, h, w = RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
            flip = int(torch.rand(1) < 0.5)
        boxes.append((top, left, h, w, flip))
    return boxes


def crop_images(x: torch.Tensor, boxes: list[tuple[int, ...]], size: tuple[int, int]) -> torch.Tensor:
    """Each image's box resized to ``size`` (torchvision's ``resized_crop``), flipped where its bit says."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for img, (top, left, h, w, flip) in zip(x, boxes):
        img = TF.resized_crop(img, top, left, h, w, list(size), antialias=True)
        out.append(TF.horizontal_flip(img) if flip else img)
    return torch.stack(out)


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def shift_images(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate each image by its (dy, dx), filling with zeros (black: MNIST's background)."""
    n, c, h, w = x.shape
    s = int(shifts.abs().max()) if shifts.numel() else 0
    if s == 0:
        return x
    padded = F.pad(x, (s, s, s, s))
    shifts = shifts.to(x.device)
    rows = torch.arange(h, device=x.device) + s - shifts[:, :1]   # (n, h): out[i] = in[i - dy]
    cols = torch.arange(w, device=x.device) + s - shifts[:, 1:]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


@dataclass(frozen=True)
class InputSpec:
    """How stored uint8 images become model inputs; saved with every checkpoint so that
    ``eval`` and ``predict`` feed the model exactly what it was trained on."""

    in_chans: int                   # what the model's first conv takes
    data_chans: int                 # what the data has (1 = grey, 3 = RGB)
    image_size: tuple[int, int]
    mean: tuple[float, ...]         # per data channel, pixels in [0, 1]
    std: tuple[float, ...]
    # The stored images' size, which files given to ``predict`` are first resized to (in PIL, as the
    # dataset was) before the same per-batch resize to ``image_size`` as in training.
    data_size: tuple[int, int] | None = None
    # The "crop" recipe: images are stored at image_size / 0.875; training takes random resized crops,
    # evaluation (and predict) the centre image_size crop, as torchvision's reference scripts do.
    crop: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(int(d["in_chans"]), int(d["data_chans"]), tuple(d["image_size"]), tuple(d["mean"]),
                   tuple(d["std"]), tuple(d["data_size"]) if d.get("data_size") else None, bool(d.get("crop")))


def prepare_batch(x: torch.Tensor, spec: InputSpec, device: torch.device | str = "cpu",
                  channels_last: bool = False, shifts: torch.Tensor | None = None,
                  crops: list[tuple[int, ...]] | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float model input: shift or crop, resize, normalise, match channels."""
    x = x.to(device, non_blocking=True).float().div_(255)
    if x.shape[1] != spec.data_chans:
        raise ResnetkitValueError(f"images have {x.shape[1]} channels but this model was trained on "
                                  f"{spec.data_chans}-channel data")
    if shifts is not None:
        x = shift_images(x, shifts)
    if crops is not None:
        x = crop_images(x, crops, tuple(spec.image_size))
    elif spec.crop and spec.data_size and tuple(x.shape[-2:]) == tuple(spec.data_size):
        x = centre_crop(x, tuple(spec.image_size))
    if tuple(x.shape[-2:]) != tuple(spec.image_size):
        x = F.interpolate(x, size=tuple(spec.image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    if spec.in_chans != spec.data_chans:
        if spec.data_chans == 1:        # grey digits into an RGB model: repeat the channel
            x = x.expand(-1, spec.in_chans, -1, -1)
        elif spec.in_chans == 1:        # colour into a grey model: ITU-R 601 luma
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ResnetkitValueError(f"cannot feed {spec.data_chans}-channel images to a {spec.in_chans}-channel model")
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
