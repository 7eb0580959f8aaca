"""``TrainConfig``: every setting of a training run, stored in ``last.pt`` for ``--resume``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ResnetkitValueError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
RECIPES = ("shift", "crop")


@dataclass
class TrainConfig:
    """Settings of one training run; the defaults train ``d2l_resnet18`` on the embedded
    ``mnist5k`` digits to >= 98% test accuracy in a few minutes on two CPU cores.

    ``batch_size`` is the global batch: under torchrun each of N processes takes
    ``batch_size / N``, so a job gives the same optimisation as one process.
    ``warmup`` is in epochs (fractions allowed); ``augment_shift`` is the largest random
    translation in pixels (0 turns augmentation off); ``image_size`` defaults to the
    data's own size (the model's ``default_input_size`` for ImageFolder trees).
    """

    model: str = "d2l_resnet18"
    data: str = "mnist5k"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup: float = 1.0
    label_smoothing: float = 0.1
    weight_decay: float = 5e-4
    clip_grad: float | None = None
    augment_shift: int = 2
    image_size: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool | None = None       # None: on when --amp is
    workers: int = 0
    max_samples: int | None = None          # train/test on a fixed subset (quick trials)
    out: str | None = "runs/train"
    resume: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # fine-tuning: a checkpoint for the body (a new head for the data's classes), frozen stages, the head's lr
    pretrained: str | None = None
    freeze_stages: int = -1
    head_lr_mult: float = 1.0
    mixup: float = 0.0                      # alpha of torchvision's MixUp (0: off)
    cutmix: float = 0.0                     # alpha of torchvision's CutMix (0: off)
    ema: float | None = None                # decay of an exponential moving average of the weights
    # "shift": random translations (augment_shift); "crop": RandomResizedCrop + flip for training and a
    # centre crop for evaluation, torchvision's reference recipe for photos (ImageFolder trees)
    recipe: str = "shift"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ResnetkitValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ResnetkitValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ResnetkitValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ResnetkitValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ResnetkitValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup < 0 or self.weight_decay < 0 or self.augment_shift < 0 or self.workers < 0:
            raise ResnetkitValueError("warmup, weight_decay, augment_shift and workers must be >= 0")
        for name in ("image_size", "max_samples"):  # None means: the data's own size / all of the data
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ResnetkitValueError(f"{name} must be >= 1 (or left unset), got {getattr(self, name)}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ResnetkitValueError(f"clip_grad must be > 0 (or None), got {self.clip_grad}")
        if self.recipe not in RECIPES:
            raise ResnetkitValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.mixup < 0 or self.cutmix < 0 or self.head_lr_mult <= 0:
            raise ResnetkitValueError("mixup and cutmix must be >= 0 and head_lr_mult > 0")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ResnetkitValueError(f"ema is a decay in (0, 1), e.g. 0.999; got {self.ema}")
        if self.resume and not self.out:
            raise ResnetkitValueError("resume needs the run folder: set out")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
