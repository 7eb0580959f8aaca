"""A real `resnetkit train` process killed with SIGKILL, mid-epoch and in the middle of writing
last.pt and best.safetensors: the files already there stay loadable, and `--resume` ends
bit for bit where an uninterrupted run ends.

The killed runs go through a small launcher that calls the real CLI (resnetkit.cli.main)
after patching one thing: at a chosen point it signals the test and waits to be killed.
For a write, it first writes the first half of the file's real bytes, which is what a
process killed while a large file is being written leaves behind.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors import safe_open

from resnetkit.train import TrainConfig, Trainer
from resnetkit.train.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # as the CLI runs below (OMP_NUM_THREADS=1)

# resnet20 with stochastic depth: the resumed run must also restore the RNG to match.
ARGS = ["--model", "resnet20", "--model-arg", "drop_path_rate=0.2", "--image-size", "16", "--max-samples", "64",
        "--batch-size", "16", "--epochs", "2", "--lr", "0.05", "--warmup", "0.5", "--device", "cpu",
        "--no-progress", "--seed", "1"]
STEPS_PER_EPOCH = 64 // 16
REFERENCE = TrainConfig(model="resnet20", model_kwargs={"drop_path_rate": 0.2}, image_size=16, max_samples=64,
                        batch_size=16, epochs=2, lr=0.05, warmup=0.5, device="cpu", seed=1)

LAUNCHER = textwrap.dedent("""
    import io, os, sys, time
    from pathlib import Path
    import safetensors.torch, torch
    from resnetkit.train import trainer

    what, count = os.environ["HOLD_AT"].rsplit(":", 1)     # "step:6", "write:last.pt:1" ...
    seen = 0

    def hold():
        Path(os.environ["HOLD_MARKER"]).touch()
        time.sleep(600)                                      # until the test kills us

    def reached(name):
        global seen
        if what == name:
            seen += 1
        return what == name and seen == int(count)

    def half_write(data, target):                            # a write cut short by the kill
        with open(target, "wb") as f:
            f.write(data[:len(data) // 2])
            f.flush()
            os.fsync(f.fileno())

    real_prepare, real_save, real_save_file = trainer.prepare_batch, torch.save, safetensors.torch.save_file

    def prepare_batch(*args, **kwargs):
        if reached("step"):
            hold()
        return real_prepare(*args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if reached("write:" + Path(f).name.split(".tmp")[0].lstrip(".")):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            half_write(buf.getvalue(), f)
            hold()
        return real_save(obj, f, *args, **kwargs)

    def save_file(tensors, filename, metadata=None):
        if reached("write:" + Path(filename).name.split(".tmp")[0].lstrip(".")):
            half_write(safetensors.torch.save(tensors, metadata=metadata), filename)
            hold()
        return real_save_file(tensors, filename, metadata=metadata)

    trainer.prepare_batch, torch.save, safetensors.torch.save_file = prepare_batch, save, save_file
    from resnetkit.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
""")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "resnetkit", "train", *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _finish(proc):
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-2000:]
    return stdout


def _start_held(tmp_path, out, hold_at, *extra):
    """Start the CLI through the launcher, which stops at ``hold_at``."""
    (tmp_path / "held").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(tmp_path / "launcher.py"), *ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "HOLD_AT": hold_at, "HOLD_MARKER": str(tmp_path / "held")})


def _kill_when_held(tmp_path, proc):
    deadline = time.monotonic() + 300
    while not (tmp_path / "held").exists():
        if proc.poll() is not None:
            stdout, stderr = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before the point where it should be killed:\n"
                        f"{stdout[-2000:]}{stderr[-2000:]}")
        assert time.monotonic() < deadline, "the kill point was not reached in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _kill_at(tmp_path, out, hold_at, *extra):
    _kill_when_held(tmp_path, _start_held(tmp_path, out, hold_at, *extra))


def _best(path):
    with safe_open(str(path), framework="pt") as f:   # raises on a truncated file
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def _metrics(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in csv.DictReader(f)]


def _assert_intact(out, last_epoch, best_epoch):
    """Every run file is complete and from the epoch it should be."""
    assert load_checkpoint(out / "last.pt")["epoch"] == last_epoch      # weights_only; raises if truncated
    meta, _ = _best(out / "best.safetensors")
    assert json.loads(meta["resnetkit"])["epoch"] == best_epoch
    assert len(_metrics(out / "metrics.csv")) >= last_epoch


def test_sigkill_mid_epoch_and_mid_write_then_resume_is_bit_exact(tmp_path):
    (tmp_path / "launcher.py").write_text(LAUNCHER)
    out = tmp_path / "run"
    first = _start_held(tmp_path, out, f"step:{STEPS_PER_EPOCH + 2}")  # to be killed in epoch 2, step 2
    # The uninterrupted run, in this process (the same code as the CLI's) while the first one starts.
    Trainer(REFERENCE, out=str(tmp_path / "ref"), progress=False, verbose=False).fit()
    ref_metrics = _metrics(tmp_path / "ref" / "metrics.csv")
    assert float(ref_metrics[1]["test_acc"]) > float(ref_metrics[0]["test_acc"]), \
        "epoch 2 must set a new best, or the best.safetensors write below never happens"
    _kill_when_held(tmp_path, first)
    _assert_intact(out, last_epoch=1, best_epoch=1)

    _kill_at(tmp_path, out, "write:best.safetensors:1", "--resume")  # epoch 2's new best, half written
    _assert_intact(out, last_epoch=1, best_epoch=1)
    assert list(out.glob(".best.safetensors.tmp*")), "the kill did not land inside the write"

    _kill_at(tmp_path, out, "write:last.pt:1", "--resume")           # epoch 2's last.pt, half written
    _assert_intact(out, last_epoch=1, best_epoch=2)
    assert list(out.glob(".last.pt.tmp*")), "the kill did not land inside the write"

    assert "resumed" in _finish(_train(out, "--resume"))
    assert _metrics(out / "metrics.csv") == ref_metrics
    ref, got = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(out / "last.pt")
    for k in ref["model"]:
        assert torch.equal(got["model"][k], ref["model"][k]), f"{k} differs after the crashes and resumes"
    (ref_meta, ref_best), (meta, best) = _best(tmp_path / "ref" / "best.safetensors"), _best(out / "best.safetensors")
    assert meta == ref_meta and list(best) == list(ref_best)
    assert all(torch.equal(best[k], ref_best[k]) for k in ref_best)
    assert not list(out.glob(".*tmp*")), "temporary files of the killed writes were left behind"
