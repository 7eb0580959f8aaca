"""Training data: every --data format on small files written here, and every bad-data error."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resnetkit.cli import main
from resnetkit.train import DataError, load_dataset
from resnetkit.train.data import batch_loader, read_idx
from resnetkit.train.transforms import InputSpec, epoch_order, epoch_shifts, prepare_batch, shift_images


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    """IDX as LeCun's page defines it: 0, 0, type byte 0x08 (ubyte), ndim, big-endian sizes, data."""
    raw = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape) + \
        array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def make_idx_folder(root, gz: bool, n_train=12, n_test=6):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        data[prefix] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_and_raw(tmp_path, gz):
    data = make_idx_folder(tmp_path / "mnist", gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(tmp_path / "mnist", split)
        images, labels = data[prefix]
        assert ds.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        assert ds.labels.tolist() == labels.tolist()
        assert ds.classes == [str(i) for i in range(10)]


def test_fashion_mnist_folder_gets_fashion_class_names(tmp_path):
    make_idx_folder(tmp_path / "FashionMNIST" / "raw", gz=True)
    ds = load_dataset(tmp_path / "FashionMNIST" / "raw", "test")
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"


def test_corrupt_idx_errors_name_the_file(tmp_path):
    make_idx_folder(tmp_path / "m", gz=False)
    bad = tmp_path / "m" / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])          # truncated
    with pytest.raises(DataError, match="corrupt IDX file .*train-images-idx3-ubyte.*header says"):
        load_dataset(tmp_path / "m", "train")
    bad.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 20)  # wrong magic
    with pytest.raises(DataError, match="bad magic number 12345678"):
        read_idx(bad)
    gz = tmp_path / "g" / "t10k-images-idx3-ubyte.gz"
    make_idx_folder(tmp_path / "g", gz=True)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="corrupt IDX file .*t10k-images-idx3-ubyte.gz"):
        load_dataset(tmp_path / "g", "test")


def damage_gzip_body(path) -> None:
    """Keep the gzip header, flip bytes inside the deflate stream (zlib.error, not OSError, on reading)."""
    raw = path.read_bytes()
    path.write_bytes(raw[:20] + bytes(b ^ 0xFF for b in raw[20:60]) + raw[60:])


def test_corrupt_gzip_body_names_the_file(tmp_path):
    make_idx_folder(tmp_path / "m", gz=True)
    bad = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    damage_gzip_body(bad)
    with pytest.raises(DataError, match=f"corrupt IDX file {bad}: cannot read it") as info:
        load_dataset(tmp_path / "m", "train")
    assert isinstance(info.value.__cause__, zlib.error)


def assert_one_line_error(capsys, command: str, *needles: str) -> None:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnetkit {command}: error: "), out.err
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in out.err + out.out


def test_cli_bad_data_is_one_line_naming_the_file(tmp_path, capsys):
    train = ["train", "--model", "resnet20", "--image-size", "16", "--device", "cpu", "--no-progress",
             "--out", str(tmp_path / "run")]
    assert main([*train, "--data", str(tmp_path / "missing")]) == 2
    assert_one_line_error(capsys, "train", f"dataset folder {tmp_path / 'missing'} does not exist")
    make_idx_folder(tmp_path / "m", gz=True)
    damage_gzip_body(tmp_path / "m" / "train-images-idx3-ubyte.gz")      # zlib.error, as in the test above
    assert main([*train, "--data", str(tmp_path / "m")]) == 2
    assert_one_line_error(capsys, "train", f"corrupt IDX file {tmp_path / 'm' / 'train-images-idx3-ubyte.gz'}")
    assert not (tmp_path / "run").exists()


def test_training_on_data_without_test_images_is_an_error(tmp_path):
    from resnetkit.train import Trainer

    make_idx_folder(tmp_path / "m", gz=False, n_test=0)
    with pytest.raises(DataError, match=r"m has no test images"):     # not a NaN test loss read as divergence
        Trainer(data=str(tmp_path / "m"), model="resnet20", device="cpu", out=None, progress=False)


def test_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=f"dataset folder {tmp_path / 'nope'} does not exist"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="built-in datasets: mnist5k"):
        load_dataset("mnist60k")
    make_idx_folder(tmp_path / "m", gz=False)
    os.remove(tmp_path / "m" / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte"):
        load_dataset(tmp_path / "m", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell what dataset"):
        load_dataset(tmp_path / "empty")


def make_cifar_folder(root, n=8):
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    batches = {}
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(root / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f, protocol=2)
        batches[name] = (data, labels)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}, f)
    return batches


def test_cifar_batches(tmp_path):
    batches = make_cifar_folder(tmp_path / "cifar-10-batches-py")
    train = load_dataset(tmp_path, "train")   # the parent of the extracted archive works too
    test = load_dataset(tmp_path / "cifar-10-batches-py", "test")
    assert train.images.shape == (16, 3, 32, 32) and test.images.shape == (8, 3, 32, 32)
    data, labels = batches["data_batch_2"]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, row-major.
    assert torch.equal(train.images[8:], torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert train.labels[8:].tolist() == labels
    assert test.classes == [f"c{i}" for i in range(10)]


def test_cifar_folder_with_a_missing_batch_is_an_error(tmp_path):
    make_cifar_folder(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").rename(tmp_path / "c" / "data_batch_3")
    with pytest.raises(DataError, match=r"CIFAR folder .*c has no data_batch_2 \(found data_batch_1, data_batch_3\)"
                                        r": a partial download"):
        load_dataset(tmp_path / "c", "train")
    assert len(load_dataset(tmp_path / "c", "test")) == 8        # the test split is complete


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_loader_refuses_pickled_code(tmp_path):
    root = tmp_path / "c"
    make_cifar_folder(root)
    with open(root / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": []}, f, protocol=2)
    with pytest.raises(DataError, match=r"corrupt CIFAR batch .*test_batch: refusing to load (posix|os)\.system"):
        load_dataset(root, "test")


def write_png_tree(root, classes=("cat", "dog"), per_class=5, size=(20, 12), mode="RGB"):
    rng = np.random.default_rng(2)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")


def test_image_folder_split_resize_and_bad_image_skipped(tmp_path):
    write_png_tree(tmp_path / "pets")
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.warns(UserWarning, match=r"skipping .*broken\.png: cannot decode image"):
        train = load_dataset(tmp_path / "pets", "train", image_size=(16, 16))
    with pytest.warns(UserWarning, match=r"skipping .*broken\.png"):
        test = load_dataset(tmp_path / "pets", "test", image_size=(16, 16))
    assert train.classes == ["cat", "dog"] and train.channels == 3
    assert len(train) == 8 and len(test) == 2            # 80/20 of 5 per class; the broken file is gone
    assert not {p for p, _ in train.files} & {p for p, _ in test.files}
    images, labels, idx = train.__getitems__([0, 5])
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.uint8 and labels.tolist() == [0, 1]
    # The decoded pixels are the file's pixels (no resize when the size already matches).
    with pytest.warns(UserWarning, match=r"skipping .*broken\.png"):
        native = load_dataset(tmp_path / "pets", "train", image_size=(12, 20))
    expected = np.array(Image.open(native.files[0][0]))
    assert torch.equal(native.__getitems__([0])[0][0], torch.from_numpy(expected).permute(2, 0, 1))


def write_undecodable_png(path) -> None:
    """A PNG whose chunks and CRCs are valid (PIL's verify() passes) but whose pixel data is not zlib."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((12, 20, 3), np.uint8)).save(buf, "png")
    raw = buf.getvalue()
    start = raw.index(b"IDAT") - 4
    n = struct.unpack(">I", raw[start:start + 4])[0]
    body = b"\xff" * n
    path.write_bytes(raw[:start + 8] + body + struct.pack(">I", zlib.crc32(b"IDAT" + body)) + raw[start + 12 + n:])


def test_image_that_fails_to_decode_after_the_scan_is_replaced_by_the_next(tmp_path):
    write_png_tree(tmp_path / "pets", per_class=5)
    train = load_dataset(tmp_path / "pets", "train", image_size=(12, 20))   # the scan accepts every file
    bad_path = train.files[3][0]
    write_undecodable_png(bad_path)
    with pytest.warns(UserWarning, match=f"cannot decode image {bad_path}: .*using the next image"):
        images, labels, idx = train.__getitems__([3, 0])
    # Sample 4 (the next file) stands in for 3, with its own label: the same every epoch and every run.
    next_image = torch.from_numpy(np.array(Image.open(train.files[4][0]))).permute(2, 0, 1)
    assert torch.equal(images[0], next_image) and idx.tolist() == [4, 0]
    assert labels.tolist() == [train.files[4][1], train.files[0][1]]
    assert train.__getitem__(3)[1] == train.files[4][1]
    for path, _ in train.files:
        write_undecodable_png(path)
    with pytest.raises(DataError, match=r"no image of .*pets can be decoded \(all 8 files failed\)"):
        with pytest.warns(UserWarning):
            train.__getitems__([0])
    # From a DataLoader worker too, with the same one-line message (not the worker's traceback).
    with pytest.raises(DataError) as info:
        list(batch_loader(train, [[0, 1]], workers=1))
    assert str(info.value).startswith("no image of") and "\n" not in str(info.value)


def test_image_folder_with_train_test_subfolders_and_grey(tmp_path):
    write_png_tree(tmp_path / "d" / "train", classes=("a", "b", "c"), per_class=2, mode="L")
    write_png_tree(tmp_path / "d" / "val", classes=("a", "b", "c"), per_class=1, mode="L")
    train, test = load_dataset(tmp_path / "d", "train"), load_dataset(tmp_path / "d", "test")
    assert (len(train), len(test), train.channels, test.classes) == (6, 3, 1, ["a", "b", "c"])


def test_undecodable_image_at_load_time_names_the_file(tmp_path):
    from resnetkit.train.data import load_image

    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"cannot decode image {bad}"):
        load_image(bad, "RGB", (8, 8))


def test_mnist5k_fixed_stratified_split():
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert test.labels.bincount().tolist() == [100] * 10
    assert train.images.shape[1:] == (1, 28, 28) and int(train.images.max()) == 255
    # Fixed: the same split every time, and no digit is in both halves.
    assert torch.equal(load_dataset("mnist5k", "test").images, test.images)
    flat_train = {bytes(x) for x in train.images.flatten(1).numpy()}
    assert not any(bytes(x) in flat_train for x in test.images.flatten(1).numpy())


def test_epoch_order_is_shared_between_one_and_two_processes():
    single = epoch_order(10, seed=3, epoch=1)
    r0, r1 = epoch_order(10, 3, 1, rank=0, world=2), epoch_order(10, 3, 1, rank=1, world=2)
    assert sorted(single) == list(range(10))
    # Global batch i of 2 processes with per-rank batch 2 == batch i of one process with batch 4.
    for i in range(2):
        assert sorted(r0[2 * i:2 * i + 2] + r1[2 * i:2 * i + 2]) == sorted(single[4 * i:4 * i + 4])
    assert epoch_order(10, 3, 2) != single and epoch_order(10, 4, 1) != single
    assert torch.equal(epoch_shifts(10, 2, 3, 1), epoch_shifts(10, 2, 3, 1))


def test_shift_and_prepare_batch():
    x = torch.zeros(2, 1, 5, 5)
    x[:, 0, 2, 2] = 1
    out = shift_images(x, torch.tensor([[1, -2], [0, 0]]))
    assert out[0, 0, 3, 0] == 1 and out[0].sum() == 1 and torch.equal(out[1], x[1])
    spec = InputSpec(in_chans=3, data_chans=1, image_size=(8, 8), mean=(0.5,), std=(0.25,))
    batch = prepare_batch(torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), spec, channels_last=True)
    assert batch.shape == (2, 3, 8, 8) and batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch, torch.full_like(batch, 2.0))       # (1 - 0.5) / 0.25, repeated to 3 channels


def test_import_resnetkit_stays_light():
    code = ("import sys, resnetkit, resnetkit.train; "
            "print(sorted(m for m in ('matplotlib', 'mlxtend', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_extra_gives_install_hint(monkeypatch):
    from resnetkit.train._deps import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingExtraError, match=r"needs matplotlib, which is not installed: "
                                                r"pip install 'resnetkit\[train\]'"):
        require("matplotlib")
