"""Reading and writing weight files safely.

A checkpoint is recognised by its first bytes, not its suffix: a zip archive
(``torch.save`` since PyTorch 1.6), a legacy ``torch.save`` pickle, or a
safetensors file (8-byte header length followed by a JSON header). Pickles are
only ever read with ``weights_only=True``, so a crafted ``__reduce__`` never
runs; anything else is refused with an error that names the file.
"""
from __future__ import annotations

import argparse
import os
import pickletools
import struct
import warnings
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import ResnetkitError


class WeightsError(ResnetkitError, ValueError):
    """A weight file that cannot be read, or whose tensors do not fit the model."""


# Where training scripts put the model's tensors inside a bigger checkpoint dict, in order of
# preference: mmcv/mmengine and timm's train.py use "state_dict"; resnetkit's last.pt and many
# scripts "model"; others "model_state"/"model_state_dict"/"net". EMA copies are not preferred.
NESTING_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module")

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of every pickle of protocol >= 2 (legacy torch.save uses 2)


def _sniff(path: Path) -> str:
    """'zip', 'pickle' or 'safetensors' from the first bytes; WeightsError for anything else."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head[:1] == bytes([_PICKLE_PROTO]):
        return "pickle"
    if not head:
        what = "is empty"
    elif _looks_like_text(path):
        what = "is a text file"
    else:
        what = f"starts with bytes {head[:8]!r}"
    raise WeightsError(f"{path} is not a checkpoint: it {what}. Expected a torch.save file (.pth/.pt) or a "
                       ".safetensors file.")


def _looks_like_text(path: Path) -> bool:
    with path.open("rb") as f:
        chunk = f.read(4096)
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in chunk


def _allow_trusted_plain_types():  # noqa: ANN202
    """timm's train.py stores its argparse.Namespace next to the weights; it only holds values,
    so allow it in the weights_only unpickler (which still refuses every other global)."""
    safe = getattr(torch.serialization, "safe_globals", None)
    return safe([argparse.Namespace]) if safe else nullcontext()


# torch's weights_only unpickler names a global it will not import in these messages; only those mean
# the file wants to run code. Its other complaints (an unknown opcode, a bad memo key) are damage.
_DISALLOWED = ("Unsupported global", "is blocked")


def _unpickler_reason(msg: str) -> str:
    """torch's own reason from a ``torch.load`` error, without its boilerplate and allow-list advice."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    reason = next((ln for ln in lines if any(d in ln for d in _DISALLOWED)), None)
    if reason is None and "WeightsUnpickler error:" in msg:  # the unpickler's words follow this marker
        reason = next((ln.strip() for ln in msg.split("WeightsUnpickler error:", 1)[1].splitlines() if ln.strip()),
                      None)
    reason = reason or (lines[0] if lines else "no detail")
    return reason.split("WeightsUnpickler error:")[-1].split(". Please")[0].strip().rstrip(".")


def _complete_pickle(path: Path) -> int | None:
    """The protocol of a well-formed pickle of protocol >= 4 (torch's safe loader reads only 2 and 3)."""
    try:
        with path.open("rb") as f:
            ops = pickletools.genops(f)
            first = next(ops)
            if first[0].name != "PROTO" or first[1] < 4:
                return None
            for _ in ops:  # raises on damage; stops at the pickle's STOP
                pass
            return first[1]
    except Exception:  # noqa: BLE001 - any failure to parse means "not a complete pickle"
        return None


def _torch_load(path: Path) -> Any:
    try:
        # a file object, not the path: newer torch.load picks a reader from the suffix, we sniffed the bytes
        with _allow_trusted_plain_types(), path.open("rb") as f, warnings.catch_warnings():
            # torch warns before failing on protocol >= 4; the error below says it better
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle and allow-list failures all mean "not loadable"
        why = _unpickler_reason(str(e))
        advice = ("resnetkit only loads pickles with weights_only=True. If you trust the file, extract its tensors "
                  "yourself (torch.load(path, weights_only=False)) and save them with resnetkit.save_weights().")
        if any(d in why for d in _DISALLOWED):
            raise WeightsError(f"{path} was refused: unpickling it would run code that is not plain tensors or "
                               f"containers ({why}). {advice}") from e
        if protocol := _complete_pickle(path):
            raise WeightsError(f"{path} was refused: it is a pickle of protocol {protocol}, which the weights_only "
                               f"loader cannot check for code (torch.save writes protocol 2). {advice}") from e
        raise WeightsError(f"{path} is truncated or corrupt and cannot be read as a PyTorch checkpoint "
                           f"({type(e).__name__}: {why})") from e


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # SafetensorError has no stable import path across versions
        raise WeightsError(f"{path} is truncated or corrupt and cannot be read as safetensors "
                           f"({type(e).__name__}: {e})") from e


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of string names to tensors."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def find_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model tensors inside a loaded checkpoint: the object itself or one of :data:`NESTING_KEYS`
    (searched recursively, e.g. ``{"model": {"state_dict": ...}}``)."""
    def search(o: Any, depth: int) -> Mapping | None:
        if is_state_dict(o):
            return o
        if isinstance(o, Mapping) and depth < 3:
            for key in NESTING_KEYS:
                found = search(o.get(key), depth + 1) if key in o else None
                if found is not None:
                    return found
        return None

    found = search(obj, 0)
    if found is None:
        if isinstance(obj, Mapping):
            keys = ", ".join(repr(k) for k in list(obj)[:10])
            detail = f"a dict with keys {keys}" if obj else "an empty dict"
        else:
            detail = f"a {type(obj).__name__}"
        raise WeightsError(f"{source} holds no state dict: it is {detail}, and none of its "
                           f"{', '.join(NESTING_KEYS)} entries is a dict of tensors")
    return dict(found)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model tensors of a ``.pth``/``.pt``/``.safetensors`` file (format sniffed from its bytes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    kind = _sniff(path)
    obj = _safetensors_load(path) if kind == "safetensors" else _torch_load(path)
    return find_state_dict(obj, source=str(path))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel/DataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            inner = model.module
        if inner is None:
            return model
        model = inner


def _file_mode() -> int:
    """What ``open()`` would give a new file: 0o666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temporary(path: Path, pid: str) -> Path:
    return path.with_name(f".{path.name}.tmp{pid}")


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete the temporary files that writers killed inside :func:`atomic_path` left next to ``path``."""
    path = Path(path)
    for tmp in path.parent.glob(_temporary(path, "*").name):
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write; on success rename it to ``path``.

    ``os.replace`` is atomic on POSIX and Windows, so a process killed at any moment
    leaves either the old complete file or the new one, never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, str(os.getpid()))
    try:
        yield tmp
        os.chmod(tmp, _file_mode())  # some writers (safetensors) create 0600 files
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors as contiguous CPU copies (channels_last weights are not contiguous,
    and safetensors stores only contiguous, unshared tensors)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors (whatever the suffix) and return the path.

    DDP/compile wrappers are unwrapped so the keys are the plain model's. Tensors
    are stored as contiguous CPU copies; ``metadata`` (string to string) goes into
    the safetensors header next to ``model_name`` when the model has one. The file
    is written under a temporary name and renamed, so an interrupted save never
    leaves a truncated file behind.
    """
    from safetensors.torch import save_file

    model = unwrap_model(model)
    meta = {"format": "pt", "library": "resnetkit"}
    if getattr(model, "model_name", None):
        meta["model_name"] = str(model.model_name)
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(cpu_state_dict(model), str(tmp), metadata=meta)
    return Path(path)
