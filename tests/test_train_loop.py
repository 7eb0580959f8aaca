"""Training loop: run files, exact resume, NaN stop, schedules, eval/predict CLI.

Small and fast: resnet20 (0.27 M parameters) at 16x16 on fixed subsets of mnist5k.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import resnetkit as rk
from resnetkit.cli import main
from resnetkit.train import TrainConfig, Trainer, TrainingDiverged, load_dataset
from resnetkit.train.checkpoint import METRIC_COLUMNS, load_checkpoint
from resnetkit.train.trainer import LRSchedule, param_groups

TINY = dict(model="resnet20", data="mnist5k", image_size=16, max_samples=96, batch_size=32, epochs=2,
            warmup=0.5, lr=0.05, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = Trainer(TrainConfig(**TINY, out=str(out)), progress=False, verbose=False).fit()
    return out, result


def test_run_files_are_real(tiny_run):
    out, result = tiny_run
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == METRIC_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["test_acc"]) == pytest.approx(result.history[-1]["test_acc"], abs=1e-6)
    with safe_open(str(out / "best.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetkit"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["model"] == "resnet20" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["input"]["image_size"] == [16, 16] and meta["input"]["in_chans"] == 3
    model = rk.create_model("resnet20", num_classes=10)
    model.load_state_dict(tensors)                      # strict: every key, every shape
    state = load_checkpoint(out / "last.pt")            # weights_only=True inside
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "scheduler", "rng", "config"}
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


@pytest.mark.parametrize("model,kwargs", [
    ("resnet20", {}),                           # nothing random inside the model
    ("ghostnet_100", {}),                       # dropout (p=0.2) before the classifier
    ("resnet20", {"drop_path_rate": 0.3}),      # stochastic depth in every block
], ids=["plain", "dropout", "drop_path"])
def test_resume_after_kill_equals_uninterrupted_bit_for_bit(tmp_path, model, kwargs):
    cfg = TrainConfig(**{**TINY, "model": model}, model_kwargs=kwargs, out=str(tmp_path / "a"))
    full = Trainer(cfg, progress=False, verbose=False).fit()

    def kill_after_first_epoch(trainer, row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt  # as if the process died right after writing epoch 1's files

    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, out=str(tmp_path / "b"), callbacks=[kill_after_first_epoch], progress=False,
                verbose=False).fit()
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    # A fresh process would start from other RNG states: the resume must restore the saved ones.
    torch.manual_seed(12345)
    resumed = Trainer(cfg, out=str(tmp_path / "b"), resume=True, progress=False, verbose=False).fit()
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(b[k], a[k]), f"{k} differs after resume"
    untimed = [[{k: v for k, v in row.items() if k != "epoch_time_s"} for row in run.history]
               for run in (full, resumed)]
    assert untimed[0] == untimed[1]
    if not kwargs and model == "resnet20":
        # A second seed gives other weights, so the comparison above can fail.
        other = Trainer(cfg, out=str(tmp_path / "c"), seed=1, epochs=1, progress=False, verbose=False).fit()
        assert not torch.equal(other.model.state_dict()["fc.weight"], a["fc.weight"])


def test_resume_reads_per_rank_rng_states_and_warns_on_another_process_count(tiny_run, tmp_path):
    out, _ = tiny_run
    state = load_checkpoint(out / "last.pt")
    assert len(state["rng"]) == 1                     # one RNG state per process
    for name, rng in (("old", state["rng"][0]), ("torchrun2", state["rng"] * 2)):
        (tmp_path / name).mkdir()
        torch.save({**state, "rng": rng}, tmp_path / name / "last.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # a file from before per-rank states resumes quietly
        Trainer(TrainConfig(**TINY, out=str(tmp_path / "old"), resume=True), progress=False)
    with pytest.warns(UserWarning, match=r"written by 2 processes, this run has 1: dropout and drop-path masks "
                                         r"will not match the interrupted run"):
        Trainer(TrainConfig(**TINY, out=str(tmp_path / "torchrun2"), resume=True), progress=False)


class NaNAfter(nn.Module):
    """Wraps a model; its output becomes NaN once ``poisoned`` is set."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.poisoned = inner, False

    def forward(self, x):
        y = self.inner(x)
        return y * float("nan") if self.poisoned else y


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = NaNAfter(rk.create_model("resnet20", num_classes=10))
    good = {}

    def poison(trainer, row):
        good.update({k: v.clone() for k, v in model.inner.state_dict().items()})
        model.poisoned = True

    trainer = Trainer(TrainConfig(**TINY, out=str(tmp_path)), model=model, callbacks=[poison], progress=False,
                      verbose=False)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 1 .*last good checkpoint "
                                               r".*last\.pt \(after epoch 1\) is kept"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1
    for k, v in good.items():
        assert torch.equal(state["model"][f"inner.{k}"], v), k
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# 64 samples: two steps per epoch, the loss check of a step stops the run; 32: one step per epoch, only the
# end-of-epoch check sees the blown-up weights, before anything is written
@pytest.mark.parametrize("samples,message", [("64", "loss became"), ("32", "no checkpoint was written yet")])
def test_nan_from_huge_lr_on_the_cli(tmp_path, capsys, samples, message):
    args = ["train", "--model", "resnet20", "--image-size", "16", "--max-samples", samples, "--batch-size", "32",
            "--epochs", "3", "--lr", "1e30", "--warmup", "0", "--device", "cpu", "--no-progress",
            "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("resnetkit train: error: ") and message in err[0], err
    assert "--lr" in err[0]
    if samples == "32":
        assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.safetensors").exists()


def test_weights_blown_up_by_an_epochs_last_step_are_never_saved(tmp_path):
    # One step per epoch: each step's loss is computed before its update, so only the end-of-epoch check
    # can see that the update of epoch 2 made the weights NaN/inf.
    cfg = TrainConfig(**{**TINY, "max_samples": 32, "epochs": 3, "warmup": 0}, out=str(tmp_path))
    good = {}

    def huge_lr_from_epoch_2(trainer, row):
        good.update({k: v.clone() for k, v in trainer.net.state_dict().items()})
        for group in trainer.optimizer.param_groups:   # the lr of the next step: epoch 2's only one
            group["lr"] = 1e30

    trainer = Trainer(cfg, callbacks=[huge_lr_from_epoch_2], progress=False, verbose=False)
    assert trainer.steps_per_epoch == 1
    with pytest.raises(TrainingDiverged, match=r"became NaN/inf in epoch 2 \(train loss [0-9.]+, test loss nan, "
                                               r"lr 1e\+30\); stopped - the last good checkpoint .*last\.pt "
                                               r"\(after epoch 1\) is kept"):
        trainer.fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    for k, v in good.items():
        assert torch.equal(state["model"][k], v), k
    model, meta = rk.train.load_trained(tmp_path / "best.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in good.items())
    with open(tmp_path / "metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1"]


@pytest.mark.parametrize("flags,message", [
    (["--device", "tpu"], "unknown device 'tpu': use auto, cpu, cuda or cuda:N"),
    (["--device", "mps"], "unknown device 'mps': use auto, cpu, cuda or cuda:N"),
    (["--image-size", "-4"], "image_size must be >= 1 (or left unset), got -4"),
    (["--max-samples", "0"], "max_samples must be >= 1 (or left unset), got 0"),
])
def test_bad_train_settings_are_one_line_errors(tmp_path, capsys, flags, message):
    assert main(["train", "--model", "resnet20", "--no-progress", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"resnetkit train: error: {message}"
    assert not list(tmp_path.iterdir())


def test_schedules_and_weight_decay_groups():
    cosine, step = LRSchedule("cosine", 100, 10), LRSchedule("step", 100, 0)
    assert cosine(0) == pytest.approx(1 / 11) and cosine(10) == 1.0 and cosine(99) < 0.001
    assert cosine(55) == pytest.approx(0.5)
    assert (step(49), step(50), step(75)) == (1.0, pytest.approx(0.1), pytest.approx(0.01))
    model = rk.create_model("resnet20", num_classes=10)
    decay, no_decay = param_groups(model, 5e-4)
    norm_and_bias = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    norm_and_bias.add(id(model.fc.bias))
    assert {id(p) for p in no_decay["params"]} == norm_and_bias and no_decay["weight_decay"] == 0
    assert id(model.fc.weight) in {id(p) for p in decay["params"]}


@pytest.mark.parametrize("opt,sched", [("adamw", "step")])
def test_adamw_amp_clip_and_label_smoothing_train(tmp_path, opt, sched):
    result = Trainer(TrainConfig(**{**TINY, "epochs": 1, "lr": 1e-3}, optimizer=opt, schedule=sched, amp=True,
                                 clip_grad=1.0, label_smoothing=0.1, out=None), progress=False,
                     verbose=False).fit()
    assert result.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.isfinite(result.history[0]["train_loss"])


def test_eval_cli_prints_accuracy_and_saves_confusion_png(tiny_run, capsys):
    out, result = tiny_run
    png = out / "cm.png"
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--data", "mnist5k",
                 "--device", "cpu", "--confusion-png", str(png)]) == 0
    text = capsys.readouterr().out
    # The evaluation runs on all 1,000 test digits, not the run's 96-image subset.
    assert "resnet20 on mnist5k (test, 1000 images): accuracy" in text
    lines = text.splitlines()
    start = lines.index("true \\ predicted")
    matrix = [[int(v) for v in line.split()[1:]] for line in lines[start + 2:start + 12]]
    assert np.array(matrix).sum() == 1000 and np.array(matrix).sum(1).tolist() == [100] * 10
    acc = float(text.split("accuracy ")[1].split("%")[0])
    assert acc == pytest.approx(100 * np.trace(matrix) / 1000, abs=0.01)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_cli_matches_the_model_on_the_same_pixels(tiny_run, tmp_path, capsys):
    out, result = tiny_run
    test = load_dataset("mnist5k", "test")
    paths = []
    for i in (0, 500):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(test.images[i, 0].numpy(), "L").save(paths[-1])
    assert main(["predict", "--checkpoint", str(out / "best.safetensors"), "--topk", "3", "--device", "cpu",
                 *map(str, paths)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    model, meta = rk.train.load_trained(out / "best.safetensors")
    from resnetkit.train.transforms import InputSpec, prepare_batch

    with torch.no_grad():
        probs = model(prepare_batch(test.images[[0, 500]], InputSpec.from_dict(meta["input"]))).softmax(1)
    for line, p, path in zip(lines, probs, paths):
        assert line.startswith(f"{path}: ")
        shown = [(name, float(pct.rstrip("%"))) for name, pct in (x.split() for x in line.split(": ")[1].split(", "))]
        assert len(shown) == 3
        top = p.topk(3)
        assert [name for name, _ in shown] == [str(int(i)) for i in top.indices]
        assert [v for _, v in shown] == pytest.approx((100 * top.values).tolist(), abs=0.01)


def test_eval_and_predict_errors(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    save_file(rk.create_model("resnet20").state_dict(), str(plain))   # weights without training metadata
    assert main(["predict", "--checkpoint", str(plain), str(plain)]) == 2
    assert "has no resnetkit training metadata" in capsys.readouterr().err


def test_eval_without_matplotlib_names_the_confusion_png(tiny_run, monkeypatch, capsys):
    out, _ = tiny_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--device", "cpu",
                 "--confusion-png", str(out / "cm_nompl.png")]) == 2
    assert capsys.readouterr().err.strip() == ("resnetkit eval: error: saving the confusion matrix as "
                                               "cm_nompl.png needs matplotlib, which is not installed: "
                                               "pip install 'resnetkit[train]'")


def test_checkpoint_whose_metadata_names_another_model(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    with safe_open(str(out / "best.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetkit"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    wrong = tmp_path / "wrong.safetensors"
    save_file(tensors, str(wrong), metadata={"resnetkit": json.dumps({**meta, "model": "resnet32"})})
    with pytest.raises(ValueError, match=f"{wrong}: its weights do not fit the model its metadata names "
                                         r"\(resnet32, 10 classes\): Missing key"):
        rk.train.load_trained(wrong)
    assert main(["eval", "--checkpoint", str(wrong), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(wrong) in err and "resnet32" in err


def test_predict_on_a_folder_says_it_is_a_folder(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert main(["predict", "--checkpoint", str(out / "best.safetensors"), "--device", "cpu", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (f"resnetkit predict: error: {tmp_path} is a folder, not an image "
                                               "file; pass the image files themselves")


def test_train_and_eval_on_an_image_folder_tree_with_workers(tmp_path, capsys):
    from test_train_data import write_png_tree

    write_png_tree(tmp_path / "pets", per_class=10)        # 20x12 RGB PNGs, 2 classes
    result = Trainer(TrainConfig(model="resnet20", data=str(tmp_path / "pets"), batch_size=4, epochs=1,
                                 workers=1, device="cpu", out=str(tmp_path / "run")),
                     progress=False, verbose=False).fit()
    assert result.history[0]["epoch"] == 1
    meta = rk.train.load_trained(tmp_path / "run" / "best.safetensors")[1]
    # No --image-size: the tree is resized to what resnet20 is designed for (3x32x32).
    assert meta["input"]["image_size"] == [32, 32] and meta["classes"] == ["cat", "dog"]
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(tmp_path / "pets"),
                 "--device", "cpu"]) == 0
    assert "(test, 4 images)" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(tmp_path / "run"), "--topk", "5",
                 str(tmp_path / "pets" / "cat" / "0.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.count("%") == 2 and ("cat" in line and "dog" in line)   # top-5 of 2 classes shows both


@pytest.mark.parametrize("workers", ["0", "1"])
def test_image_that_fails_to_decode_mid_training_is_skipped_with_a_warning(tmp_path, workers):
    from test_train_data import write_png_tree, write_undecodable_png

    write_png_tree(tmp_path / "pets", per_class=5)
    bad = tmp_path / "pets" / "cat" / "3.png"
    write_undecodable_png(bad)                                 # passes the scan's verify(), fails to decode
    # A subprocess: a DataLoader worker's warning goes to the real stderr, which pytest cannot record.
    run = subprocess.run([sys.executable, "-m", "resnetkit", "train", "--model", "resnet20", "--data",
                          str(tmp_path / "pets"), "--image-size", "16", "--batch-size", "4", "--epochs", "1",
                          "--workers", workers, "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert f"cannot decode image {bad}" in run.stderr and "using the next image" in run.stderr
    assert "Traceback" not in run.stderr and (tmp_path / "run" / "last.pt").is_file()


def test_missing_matplotlib_is_reported_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    args = ["train", "--model", "resnet20", "--image-size", "16", "--max-samples", "32", "--epochs", "1",
            "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == ("resnetkit train: error: drawing curves.png needs matplotlib, which "
                                               "is not installed: pip install 'resnetkit[train]'")
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written
