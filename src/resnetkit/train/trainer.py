"""``Trainer`` and ``fit``: the training loop behind ``resnetkit train``."""
from __future__ import annotations

import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from ..errors import ResnetkitValueError
from ..weights.io import cpu_state_dict
from . import checkpoint as ckpt
from . import distributed as dist
from ._deps import require
from .config import TrainConfig
from .data import ArrayDataset, DataError, ImageFolderDataset, batch_loader, load_dataset
from .evaluate import EvalResult, autocast, evaluate
from .transforms import CROP_PCT, InputSpec, epoch_crops, epoch_order, epoch_shifts, prepare_batch

Callback = Callable[["Trainer", dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the trained model (unwrapped from DDP), one
    metrics dict per epoch, the best test accuracy and where the files went."""

    model: nn.Module
    history: list[dict[str, float]]
    best_acc: float
    out: Path | None

    @property
    def final_acc(self) -> float:
        return self.history[-1]["test_acc"] if self.history else float("nan")


class LRSchedule:
    """Learning-rate factor per optimiser step: linear warm-up, then cosine to 0, step
    decay (x0.1 at 50% and 75% of training) or constant. A plain object so that
    ``LambdaLR.state_dict`` stays weights_only-loadable."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total_steps), min(warmup_steps, max(0, total_steps - 1))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "step":
            return 0.1 ** sum(t >= m for m in (0.5, 0.75))
        return 1.0


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: decaying norm scales and biases only
    fights the normalisation and hurts accuracy (the usual timm/torchvision recipe)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _model_in_chans(model: nn.Module) -> int:
    size = getattr(model, "default_input_size", None)
    if size:
        return int(size[0])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _model_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """The seed of one process's model randomness (dropout, drop path) from ``epoch`` on.

    Each torchrun rank gets its own, so the ranks draw independent masks, as the
    samples of one big batch do; data order and augmentation do not use it.
    """
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, dtype=np.uint64)[0])


def _mixer(cfg: TrainConfig, num_classes: int) -> Callable | None:
    """torchvision's MixUp and/or CutMix (one of them per batch when both are on), or None."""
    if not (cfg.mixup or cfg.cutmix):
        return None
    from torchvision.transforms import v2

    mixes = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) + \
            ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


def amp_choice(amp: bool, device: torch.device) -> tuple[bool, str]:
    """Whether ``--amp`` really autocasts, and why not. On a CPU without bf16 instructions (AMX-BF16,
    AVX512-BF16) oneDNN converts around every multiply or refuses: a training step of resnet20 (32 px,
    batch 64) took 1,569 ms in bf16 against 147 ms in fp32 under an AVX2 cap, so training stays fp32 there."""
    if not amp or device.type != "cpu":
        return amp, ""
    from ..deploy.cpu import BF16_FLAGS, cpu, names

    if cpu().first(*BF16_FLAGS):
        return True, ""
    return False, (f"--amp: this CPU ({cpu().level}) has no bf16 instructions ({names(*reversed(BF16_FLAGS))}), "
                   "where bf16 autocast trains about 10x slower than fp32; training in fp32 instead")


class Trainer:
    """Train a registered model (or one you pass) on a dataset, writing run files to ``config.out``.

    >>> from resnetkit.train import Trainer, TrainConfig           # doctest: +SKIP
    >>> result = Trainer(TrainConfig(epochs=3, out="runs/x")).fit()  # doctest: +SKIP
    >>> result.final_acc                                              # doctest: +SKIP

    Keyword ``overrides`` replace fields of ``config``. ``model``/``train_data``/
    ``test_data`` replace what the config names (datasets: objects like
    :class:`~resnetkit.train.data.ArrayDataset`). ``callbacks`` run on every process
    after each epoch (files written) with the trainer and the epoch's metrics.
    """

    def __init__(self, config: TrainConfig | None = None, *, model: nn.Module | None = None,
                 train_data: Any = None, test_data: Any = None, callbacks: Iterable[Callback] = (),
                 progress: bool = True, verbose: bool = True, **overrides: Any) -> None:
        cfg = replace(config or TrainConfig(), **overrides)
        self.config, self.callbacks = cfg, list(callbacks)
        self.device = dist.resolve_device(cfg.device)
        self.dist = dist.setup(self.device)
        if cfg.batch_size % self.dist.world:
            raise ResnetkitValueError(f"batch_size {cfg.batch_size} (the global batch) must divide evenly over "
                                      f"{self.dist.world} processes")
        self.progress, self.verbose = progress and self.dist.is_main, verbose and self.dist.is_main
        self.out = Path(cfg.out) if cfg.out else None
        if self.out and self.dist.is_main:  # fail now, not after the first epoch has trained
            require("matplotlib", purpose="drawing curves.png")
        if self.progress:
            require("tqdm", purpose="the progress bar (or pass --no-progress)")
        _seed_everything(cfg.seed)

        self.train_data = train_data if train_data is not None else load_dataset(cfg.data, "train")
        self.test_data = test_data if test_data is not None else load_dataset(cfg.data, "test")
        if cfg.max_samples:
            self.train_data = self.train_data.subset(min(cfg.max_samples, len(self.train_data)))
            self.test_data = self.test_data.subset(min(cfg.max_samples, len(self.test_data)))
        if not len(self.test_data):  # else the test loss would be NaN, which reads as divergence
            raise DataError(f"{cfg.data} has no test images")
        classes = list(self.train_data.classes)
        if model is None:
            from ..registry import create_model

            model = create_model(cfg.model, num_classes=len(classes), **cfg.model_kwargs)
        if cfg.pretrained:
            self._load_body(model, cfg.pretrained, len(classes))
        if cfg.freeze_stages >= 0:
            if not hasattr(model, "freeze_stages"):
                raise ResnetkitValueError(f"freeze_stages: {type(model).__name__} has no stages to freeze")
            model.freeze_stages(cfg.freeze_stages)
        # create_model tags models with their name; eval/predict rebuild the model from it.
        self.model_name = getattr(model, "model_name", None)
        self.model_kwargs = cfg.model_kwargs if self.model_name == cfg.model else {}
        self.spec = self._input_spec(model)
        self.amp, self.amp_note = amp_choice(cfg.amp, self.device)
        if self.amp_note and self.dist.is_main:
            warnings.warn(self.amp_note, stacklevel=2)
        self.channels_last = cfg.amp if cfg.channels_last is None else cfg.channels_last
        model = model.to(self.device, memory_format=torch.channels_last if self.channels_last
                         else torch.preserve_format)
        self.net = model                                  # the plain module (saved, evaluated)
        self.model = dist.wrap(model, self.dist, self.device)   # what the training step calls
        _seed_everything(_model_seed(cfg.seed, self.dist.rank))  # the same init everywhere, then per-rank masks

        self.steps_per_epoch = len(self.train_data) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ResnetkitValueError(f"batch_size {cfg.batch_size} is larger than the {len(self.train_data)} "
                                      "training images; lower --batch-size")
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, LRSchedule(cfg.schedule, cfg.epochs * self.steps_per_epoch,
                                       round(cfg.warmup * self.steps_per_epoch)))
        self.mix = _mixer(cfg, len(classes))
        # The EMA copy (torch's AveragedModel) is what is evaluated and saved as best.safetensors.
        self.ema = (torch.optim.swa_utils.AveragedModel(self.net, multi_avg_fn=torch.optim.swa_utils
                                                        .get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
                    if cfg.ema else None)
        fp16 = self.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.history: list[dict[str, float]] = []
        self.best_acc, self.epoch = -1.0, 0
        if cfg.resume:
            self._resume()

    # ------------------------------------------------------------------------------------ setup

    def _input_spec(self, model: nn.Module) -> InputSpec:
        cfg, data = self.config, self.train_data
        if cfg.image_size:
            size = (cfg.image_size, cfg.image_size)
        elif data.image_size is not None:
            size = tuple(data.image_size)
        else:  # ImageFolder trees: the size the model was designed for
            size = tuple(getattr(model, "default_input_size", (3, 224, 224))[1:])
        crop = cfg.recipe == "crop"
        if crop and not isinstance(data, ImageFolderDataset):
            raise ResnetkitValueError("recipe 'crop' is for image folders (photos stored at their own sizes); "
                                      f"{cfg.data} has fixed-size images: use recipe 'shift'")
        stored = tuple(math.ceil(s / CROP_PCT) for s in size) if crop else size
        for ds in (self.train_data, self.test_data):
            if isinstance(ds, ImageFolderDataset):
                ds.image_size = stored
        if self.test_data.channels != data.channels:
            raise ResnetkitValueError(f"train data has {data.channels} channels but test data {self.test_data.channels}")
        mean, std = data.channel_stats()
        return InputSpec(_model_in_chans(model), data.channels, size, mean, std, tuple(data.image_size), crop)

    def _load_body(self, model: nn.Module, path: str, num_classes: int) -> None:
        """Fine-tuning: every tensor of ``path`` that fits, the head left new for the data's classes."""
        from ..weights import load_weights

        with warnings.catch_warnings():  # the classifier of another size is expected here: said below
            warnings.simplefilter("ignore")
            result = load_weights(model, path, strict=False)
        keys = model.state_dict().keys()
        total = len(keys)
        skipped = set(result.missing_keys) | set(result.mismatched_keys) | set(result.ignored_keys)
        new = sorted(k for k in keys if k in skipped)
        self._log(f"pretrained {path}: {total - len(new)} of {total} tensors loaded"
                  + (f" ({result.layout} layout)" if result.layout else "")
                  + (f"; new for the {num_classes} classes here: {', '.join(new)}" if new else ""))
        if len(new) == total:
            raise ResnetkitValueError(f"pretrained {path}: no tensor fits {self.config.model}; is it a checkpoint "
                                      "of that model?")

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = param_groups(self.net, cfg.weight_decay)
        if cfg.head_lr_mult != 1.0 and hasattr(self.net, "get_classifier"):
            head = {id(p) for p in self.net.get_classifier().parameters()}
            groups = [{**g, "params": [p for p in g["params"] if id(p) in head], "lr": cfg.lr * cfg.head_lr_mult}
                      for g in groups] + [{**g, "params": [p for p in g["params"] if id(p) not in head]}
                                          for g in groups]
            groups = [g for g in groups if g["params"]]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def meta(self) -> dict[str, Any]:
        """What eval/predict need to rebuild and feed the model (stored in best.safetensors and last.pt)."""
        return {"model": self.model_name, "model_kwargs": self.model_kwargs,
                "num_classes": len(self.train_data.classes), "classes": list(self.train_data.classes),
                "input": self.spec.to_dict(), "data": str(self.config.data),
                **({"weights": f"EMA of the trained weights (decay {self.config.ema:g})"} if self.ema is not None else {})}

    # ------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything ``--resume`` needs. Under torchrun call it on every rank: it gathers each rank's RNG state."""
        sched = self.scheduler.state_dict()
        # The schedule's shape is rebuilt from the config; keeping it out lets a resumed run extend --epochs.
        sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
        return {"epoch": self.epoch, "model": cpu_state_dict(self.net), "optimizer": self.optimizer.state_dict(),
                "scheduler": sched, "scaler": self.scaler.state_dict(),
                "rng": dist.all_gather_object(ckpt.rng_state(), self.dist),   # one per rank
                "config": self.config.to_dict(), "history": self.history, "best_acc": self.best_acc,
                "meta": self.meta(), **({"ema": cpu_state_dict(self.ema)} if self.ema is not None else {})}

    def _resume(self) -> None:
        path = self.out / "last.pt"
        state = ckpt.load_checkpoint(path)
        saved = TrainConfig.from_dict(state["config"])
        changed = [f"{k}: {v!r} -> {getattr(self.config, k)!r}" for k, v in saved.to_dict().items()
                   if k not in ("resume", "epochs", "device", "workers", "out") and getattr(self.config, k) != v]
        if changed and self.verbose:
            warnings.warn(f"resuming {path} with changed settings ({'; '.join(changed)}): the run will not "
                          "match an uninterrupted one", stacklevel=3)
        self.net.load_state_dict(state["model"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history, self.best_acc = state["epoch"], list(state["history"]), state["best_acc"]
        self._restore_rng(state["rng"], path)
        self._log(f"resumed {path} after epoch {self.epoch} (best test accuracy {100 * self.best_acc:.2f}%)")

    def _restore_rng(self, saved: list[dict[str, Any]] | dict[str, Any], path: Path) -> None:
        per_rank = saved if isinstance(saved, list) else [saved]   # files from before per-rank states
        if len(per_rank) == self.dist.world:
            ckpt.set_rng_state(per_rank[self.dist.rank])
            return
        if self.verbose:
            warnings.warn(f"{path} was written by {len(per_rank)} processes, this run has {self.dist.world}: "
                          "dropout and drop-path masks will not match the interrupted run", stacklevel=4)
        _seed_everything(_model_seed(self.config.seed, self.dist.rank, self.epoch))

    def _save(self, improved: bool) -> None:
        if not self.out:
            return
        state = self.state_dict()  # on every rank: it gathers their RNG states
        if not self.dist.is_main:
            return
        # last.pt goes last: it marks the epoch done, so a run killed before it redoes the epoch (bit for
        # bit) and rewrites the other files; killed after it, every file it refers to is already there.
        if improved:
            ckpt.save_model_file(self.final_model, self.out / "best.safetensors",
                                 {**self.meta(), "epoch": self.epoch, "test_acc": self.best_acc})
        ckpt.write_metrics(self.out / "metrics.csv", self.history)
        ckpt.plot_curves(self.out / "curves.png", self.history)
        ckpt.save_checkpoint(self.out / "last.pt", state)

    # ---------------------------------------------------------------------------------- training

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    def _all_finite(self, *tensors: torch.Tensor) -> bool:
        bad = torch.stack([(~torch.isfinite(t.detach())).any() for t in tensors]).any().double().reshape(1)
        # Every rank must take the same decision, or the others would block in the next all-reduce.
        return dist.all_sum(bad, self.dist).item() == 0

    def _diverged(self, what: str) -> TrainingDiverged:
        where = (f"the last good checkpoint {self.out / 'last.pt'} (after epoch {self.epoch}) is kept"
                 if self.out and self.epoch else "no checkpoint was written yet")
        return TrainingDiverged(f"{what}; stopped - {where}. Try a lower --lr, --clip-grad 1.0, or --warmup.")

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not self._all_finite(loss):
            raise self._diverged(f"loss became {float(loss.detach()):.4g} at epoch {self.epoch + 1}, step {step + 1} "
                                 f"(lr {self.optimizer.param_groups[0]['lr']:.4g})")

    def _check_epoch_finite(self, train_loss: float, test_loss: float, lr: float) -> None:
        """Before saving: the last step's update can blow the weights up after its (finite) loss was checked."""
        losses = torch.tensor([train_loss, test_loss], dtype=torch.float64, device=self.device)
        tensors = [t for t in self.net.state_dict().values() if t.is_floating_point()]
        if not self._all_finite(losses, *tensors):
            raise self._diverged(f"the weights or losses became NaN/inf in epoch {self.epoch + 1} (train loss "
                                 f"{train_loss:.4g}, test loss {test_loss:.4g}, lr {lr:.4g})")

    def train_epoch(self) -> tuple[float, float]:
        """One pass over this rank's share of the data; returns (mean loss, accuracy) over all ranks."""
        cfg, epoch = self.config, self.epoch
        n = len(self.train_data)
        order = epoch_order(n, cfg.seed, epoch, self.dist.rank, self.dist.world)
        per_rank = cfg.batch_size // self.dist.world
        batches = [order[i * per_rank:(i + 1) * per_rank] for i in range(self.steps_per_epoch)]
        shifts = epoch_shifts(n, cfg.augment_shift, cfg.seed, epoch)
        tqdm = require("tqdm").tqdm
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not self.progress, file=sys.stderr, dynamic_ncols=True)
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)   # loss sum, correct, count
        self.model.train()
        for step, (images, labels, idx) in enumerate(batch_loader(self.train_data, batches, cfg.workers)):
            crops = epoch_crops([int(i) for i in idx], self.spec.data_size, cfg.seed, epoch) if self.spec.crop else None
            x = prepare_batch(images, self.spec, self.device, self.channels_last,
                              shifts[idx] if shifts is not None and crops is None else None, crops)
            y = labels.to(self.device, non_blocking=True)
            x, target = self.mix(x, y) if self.mix is not None else (x, y)   # soft targets when mixing
            with autocast(self.device, self.amp):
                logits = self.model(x)
            loss = self.criterion(logits.float(), target)
            self._check_finite(loss, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            with torch.no_grad():
                # Plain cross-entropy (no smoothing), so that train and test losses are comparable.
                plain = nn.functional.cross_entropy(logits.detach().float(), y, reduction="sum")
                totals += torch.stack([plain.double(), (logits.argmax(1) == y).sum().double(),
                                       torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])
            bar.update()
            if self.progress:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        bar.close()
        totals = dist.all_sum(totals, self.dist).cpu()
        return float(totals[0] / totals[2]), float(totals[1] / totals[2])

    def evaluate(self, dataset: Any = None) -> EvalResult:
        """Accuracy/loss/confusion on ``dataset`` (default: the test split)."""
        return evaluate(self.final_model, self.test_data if dataset is None else dataset, self.spec, self.device,
                        batch_size=max(256, self.config.batch_size), amp=self.amp,
                        channels_last=self.channels_last, workers=self.config.workers, dist_info=self.dist)

    @property
    def final_model(self) -> nn.Module:
        """What is evaluated and saved: the EMA weights when ``ema`` is on, else the trained ones."""
        return self.ema.module if self.ema is not None else self.net

    def fit(self) -> TrainResult:
        """Train from the current epoch to ``config.epochs``, evaluating and saving after each."""
        cfg = self.config
        if self.out and self.dist.is_main:
            ckpt.prepare_run_folder(self.out)
        self._log(f"training {self.model_name or type(self.net).__name__} on {cfg.data}: "
                  f"{len(self.train_data)} train / {len(self.test_data)} test images, "
                  f"input {self.spec.in_chans}x{self.spec.image_size[0]}x{self.spec.image_size[1]}, "
                  f"{len(self.train_data.classes)} classes, device {self.device}"
                  + (f", {self.dist.world} processes" if self.dist.enabled else "")
                  + (", bf16 autocast" if self.amp else ", fp32 (--amp: no bf16 instructions on this CPU)"
                     if cfg.amp else "") + (", channels_last" if self.channels_last else "")
                  + (f", mixup {cfg.mixup:g}" if cfg.mixup else "") + (f", cutmix {cfg.cutmix:g}" if cfg.cutmix else "")
                  + (f", EMA {cfg.ema:g} (evaluated and saved: the EMA weights)" if cfg.ema else ""))
        if self.epoch >= cfg.epochs:
            self._log(f"nothing to do: already trained for {self.epoch} of {cfg.epochs} epochs")
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = self.train_epoch()
            result = self.evaluate()
            self._check_epoch_finite(train_loss, result.loss, lr)
            self.epoch += 1
            row = {"epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc,
                   "test_loss": result.loss, "test_acc": result.accuracy, "lr": lr,
                   "epoch_time_s": time.perf_counter() - start}
            self.history.append(row)
            improved = result.accuracy > self.best_acc
            self.best_acc = max(self.best_acc, result.accuracy)
            self._save(improved)
            self._log(f"epoch {self.epoch:>3}/{cfg.epochs}  train loss {train_loss:.4f}  "
                      f"train acc {100 * train_acc:6.2f}%  test loss {result.loss:.4f}  "
                      f"test acc {100 * result.accuracy:6.2f}%  ({row['epoch_time_s']:.1f}s)")
            for callback in self.callbacks:
                callback(self, row)
        dist.barrier(self.dist)
        if self.out:
            self._log(f"best test accuracy {100 * self.best_acc:.2f}%; "
                      f"files in {self.out}/: {' '.join(ckpt.RUN_FILES)}")
        return TrainResult(self.final_model, self.history, self.best_acc, self.out)


def fit(config: TrainConfig | None = None, **kwargs: Any) -> TrainResult:
    """Train with :class:`Trainer` in one call: ``fit(model="resnet18", epochs=5, out="runs/r18")``.

    Keyword arguments are :class:`TrainConfig` fields, or the ``Trainer`` keywords
    ``model`` (an ``nn.Module``), ``train_data``, ``test_data``, ``callbacks``,
    ``progress`` and ``verbose``. A string ``model`` names a registered model.
    """
    if isinstance(kwargs.get("model"), str):
        kwargs = {**kwargs}
        config = replace(config or TrainConfig(), model=kwargs.pop("model"))
    return Trainer(config, **kwargs).fit()
