"""``torchrun --nproc_per_node=2`` on the CPU (gloo): the `resnetkit train` command line under
DistributedDataParallel gives identical weights on both ranks and matches one process, while
each rank draws its own dropout/drop-path masks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from resnetkit.train import TrainConfig, Trainer
from resnetkit.train.checkpoint import load_checkpoint

# norm_eval keeps BatchNorm on its (fixed) running statistics: per-rank batch statistics
# would otherwise differ from the single process's (SyncBatchNorm has no CPU kernel), and
# the comparison would measure that instead of the data-parallel plumbing.
ARGS = ["--model", "resnet20", "--model-arg", "norm_eval=True", "--image-size", "16", "--max-samples", "64",
        "--batch-size", "16", "--epochs", "2", "--lr", "0.05", "--warmup", "0.5", "--device", "cpu",
        "--no-progress", "--seed", "3"]

# Runs the real CLI (resnetkit.cli.main) on each rank; Trainer.fit is wrapped only to let
# every rank dump the weights and RNG state it ends with, which the CLI itself (rank 0 writes)
# never does. Before that, one epoch of resnet20 with drop path records each rank's masks.
SCRIPT = textwrap.dedent("""
    import sys, torch
    from resnetkit.blocks import DropPath
    from resnetkit.train import trainer as T, TrainConfig
    from resnetkit.weights.io import cpu_state_dict

    masks_dir = sys.argv[1]
    t = T.Trainer(TrainConfig(model="resnet20", model_kwargs={"drop_path_rate": 0.5}, image_size=16,
                              max_samples=32, batch_size=16, epochs=1, device="cpu", seed=3, out=None),
                  progress=False, verbose=False)
    dropped = []   # per DropPath call: which samples lost their residual branch
    for m in t.net.modules():
        if isinstance(m, DropPath):
            m.register_forward_hook(lambda mod, inp, out: dropped.append((out.flatten(1) == 0).all(1)))
    t.train_epoch()
    torch.save(torch.stack(dropped), f"{masks_dir}/masks{t.dist.rank}.pt")

    fit = T.Trainer.fit
    def fit_and_dump(self):
        result = fit(self)
        torch.save({"model": cpu_state_dict(self.net), "rng": torch.get_rng_state()},
                   f"{self.out}/rank{self.dist.rank}.pt")
        return result
    T.Trainer.fit = fit_and_dump
    from resnetkit.cli import main
    sys.exit(main(["train", *sys.argv[2:]]))
""")


def test_torchrun_two_processes_match_one_and_draw_their_own_masks(tmp_path):
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path), *ARGS, "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and proc.stdout.count("epoch   2/2") == 1  # rank 0 alone prints

    # Each rank draws its own drop-path masks (the same seed on every rank drew identical ones).
    masks = [torch.load(tmp_path / f"masks{r}.pt", weights_only=True) for r in (0, 1)]
    assert masks[0].shape == masks[1].shape == (2 * 8, 8)    # 2 steps x 8 DropPath blocks, 8 samples per rank
    assert 0.1 < float(masks[0].float().mean()) < 0.5          # drop rates 0.06 .. 0.5: the hook sees drops
    assert not torch.equal(masks[0], masks[1]), "both ranks dropped the same samples' branches"

    rank0, rank1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in rank0["model"]:
        assert torch.equal(rank0["model"][k], rank1["model"][k]), f"ranks differ at {k}"
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "curves.png", "last.pt", "metrics.csv",
                                                     "rank0.pt", "rank1.pt"]
    last = load_checkpoint(out / "last.pt")
    assert torch.equal(last["model"]["fc.weight"], rank0["model"]["fc.weight"])
    # last.pt holds every rank's RNG state, so that each resumes its own stream.
    assert [torch.equal(s["torch"], r["rng"]) for s, r in zip(last["rng"], (rank0, rank1))] == [True, True]
    assert not torch.equal(rank0["rng"], rank1["rng"])

    torch.set_num_threads(1)
    cfg = TrainConfig(model="resnet20", model_kwargs={"norm_eval": True}, image_size=16, max_samples=64,
                      batch_size=16, epochs=2, lr=0.05, warmup=0.5, device="cpu", seed=3, out=None)
    single = Trainer(cfg, progress=False, verbose=False).fit().model.state_dict()
    for k, v in single.items():
        if v.is_floating_point():
            # Same global batches, same augmentation, averaged gradients: only summation order differs.
            torch.testing.assert_close(rank0["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = Trainer(cfg, epochs=1, progress=False, verbose=False).net.state_dict()  # seed 3, before training
    moved = max(float((single[k] - init[k]).abs().max()) for k in single if single[k].is_floating_point())
    assert moved > 1e-3, "training did not change the weights, so the comparison proves nothing"


# Kills its own process with SIGKILL at a global training step on both ranks (mid-epoch), as a crash would.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from resnetkit.train import trainer as T

    kill_at, steps = int(sys.argv[1]), [0]
    step = T.Trainer._check_finite
    def counting(self, loss, i):
        step(self, loss, i)
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    T.Trainer._check_finite = counting
    from resnetkit.cli import main
    sys.exit(main(["train", *sys.argv[2:]]))
""")


def _torchrun(script, *args, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_torchrun_killed_mid_epoch_then_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    """Two processes, SIGKILL in epoch 2 (step 2 of 4), then `torchrun ... --resume`: the weights, metrics and
    every rank's RNG state equal those of the same job run without the kill, bit for bit."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    args = [*ARGS, "--model-arg", "drop_path_rate=0.2"]   # per-rank random masks: the RNG states must resume
    _torchrun(script, "0", *args, "--out", str(tmp_path / "ref"))                    # 0: never killed
    killed = _torchrun(script, "6", *args, "--out", str(tmp_path / "run"), check=False)
    assert killed.returncode != 0 and "epoch   2/2" not in killed.stdout
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1                 # epoch 1 kept intact
    resumed = _torchrun(script, "0", *args, "--out", str(tmp_path / "run"), "--resume")
    assert "resumed" in resumed.stdout and "epoch   2/2" in resumed.stdout
    ref, got = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "run" / "last.pt")
    assert got["epoch"] == ref["epoch"] == 2 and got["history"][-1]["test_acc"] == ref["history"][-1]["test_acc"]
    for k in ref["model"]:
        assert torch.equal(got["model"][k], ref["model"][k]), f"{k} differs after the kill and resume"
    assert [torch.equal(a["torch"], b["torch"]) for a, b in zip(got["rng"], ref["rng"])] == [True, True]
