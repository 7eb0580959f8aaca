"""``torchrun --nproc_per_node=2`` on the CPU (gloo): the `resnetkit train` command line under
DistributedDataParallel gives identical weights on both ranks and matches one process."""
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
# every rank dump the weights it ends with, which the CLI itself (rank 0 writes) never does.
SCRIPT = textwrap.dedent("""
    import sys, torch
    from resnetkit.train import trainer as T
    from resnetkit.weights.io import cpu_state_dict
    fit = T.Trainer.fit
    def fit_and_dump(self):
        result = fit(self)
        torch.save(cpu_state_dict(self.net), f"{self.out}/rank{self.dist.rank}.pt")
        return result
    T.Trainer.fit = fit_and_dump
    from resnetkit.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
""")


def test_torchrun_two_processes_match_one(tmp_path):
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *ARGS, "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 processes" in proc.stdout and proc.stdout.count("epoch   2/2") == 1  # rank 0 alone prints
    rank0, rank1 = torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True)
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), f"ranks differ at {k}"
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "curves.png", "last.pt", "metrics.csv",
                                                     "rank0.pt", "rank1.pt"]
    assert torch.equal(load_checkpoint(out / "last.pt")["model"]["fc.weight"], rank0["fc.weight"])

    torch.set_num_threads(1)
    cfg = TrainConfig(model="resnet20", model_kwargs={"norm_eval": True}, image_size=16, max_samples=64,
                      batch_size=16, epochs=2, lr=0.05, warmup=0.5, device="cpu", seed=3, out=None)
    single = Trainer(cfg, progress=False, verbose=False).fit().model.state_dict()
    for k, v in single.items():
        if v.is_floating_point():
            # Same global batches, same augmentation, averaged gradients: only summation order differs.
            torch.testing.assert_close(rank0[k], v, rtol=1e-4, atol=1e-5, msg=k)
    init = Trainer(cfg, epochs=1, progress=False, verbose=False).net.state_dict()  # seed 3, before training
    moved = max(float((single[k] - init[k]).abs().max()) for k in single if single[k].is_floating_point())
    assert moved > 1e-3, "training did not change the weights, so the comparison proves nothing"
