"""Run outputs: ``last.pt`` (resumable), ``best.safetensors``, ``metrics.csv``, ``curves.png``.

Every file is written through :func:`~resnetkit.weights.io.atomic_path` (a temporary
name in the same folder, renamed over the old file), so a run killed mid-write
leaves the previous complete file, never a truncated one.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ResnetkitValueError
from ..weights.io import atomic_path, remove_stale_temporaries, save_weights
from ._deps import require

RUN_FILES = ("metrics.csv", "curves.png", "last.pt", "best.safetensors")
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s"]
CHECKPOINT_FORMAT = "resnetkit-train-1"


def prepare_run_folder(out: Path) -> None:
    """Create ``out``; remove what a run killed while writing its files left behind."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        remove_stale_temporaries(out / name)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may touch, as tensors and plain values (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a resumable checkpoint atomically (format tag added)."""
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load ``last.pt`` with ``weights_only=True`` (no code runs), checking it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and weights_only errors all mean the same to the user
        raise ResnetkitValueError(f"{path} is not a loadable checkpoint: {e}") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ResnetkitValueError(f"{path} is not a resnetkit training checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    return state


def save_model_file(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write the weights as safetensors with ``meta`` (model name, classes, input spec) as JSON metadata."""
    save_weights(model, path, metadata={"resnetkit": json.dumps(meta)})


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Weights and training metadata from ``best.safetensors`` or ``last.pt``."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get("resnetkit")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as e:
            raise ResnetkitValueError(f"{path} is not a readable safetensors file: {e}") from e
        if meta is None:
            raise ResnetkitValueError(f"{path} has no resnetkit training metadata (model name, classes, input size); "
                                      "use a best.safetensors written by `resnetkit train`, or its last.pt")
        return tensors, json.loads(meta)
    state = load_checkpoint(path)
    return state["model"], state["meta"]


def write_metrics(path: str | os.PathLike, history: list[dict[str, float]]) -> None:
    """``metrics.csv``: one row per finished epoch, columns :data:`METRIC_COLUMNS` (losses are plain
    cross-entropy, without label smoothing; accuracies are fractions; lr is the epoch's first)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in METRIC_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _pyplot(purpose: str):  # noqa: ANN202
    matplotlib = require("matplotlib", purpose=purpose)
    matplotlib.use("Agg")  # files only: never needs a display
    return require("matplotlib.pyplot", purpose=purpose)


def plot_curves(path: str | os.PathLike, history: list[dict[str, float]]) -> None:
    """``curves.png``: train/test loss and accuracy per epoch."""
    plt = _pyplot("drawing curves.png")
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("train", "-o"), ("test", "--s")):
        ax_loss.plot(epochs, [r[f"{key}_loss"] for r in history], style, label=key)
        ax_acc.plot(epochs, [100 * r[f"{key}_acc"] for r in history], style, label=key)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_confusion(path: str | os.PathLike, confusion: torch.Tensor, classes: list[str], title: str) -> None:
    """A confusion matrix (rows: true class, columns: predicted) as a PNG heat map with counts."""
    plt = _pyplot(f"saving the confusion matrix as {Path(path).name}")
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * k + 2), max(4, 0.6 * k + 1.5)))
    ax.imshow(confusion.numpy(), cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    if k <= 30:
        top = int(confusion.max()) or 1
        for i in range(k):
            for j in range(k):
                v = int(confusion[i, j])
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
