"""Fixtures shared by several test modules."""
from __future__ import annotations

import os

import pytest
import torch

from resnetkit.deploy.engines.base import EMULATED, NATIVE

# ``make test`` runs two xdist workers on two cores: with torch's default of two OpenMP threads each they
# oversubscribe the cores, and the whole suite took 7 min 37 s instead of 3 min 10 s (an AMX Xeon).
# One thread per worker, and for the subprocesses they start.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_resnet20(tmp_path_factory):
    """A resnet20 trained on 1,500 of the embedded MNIST digits at 28×28 (2 epochs, > 85%): its run folder."""
    from resnetkit.train import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("digits") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = Trainer(TrainConfig(model="resnet20", data="mnist5k", image_size=28, max_samples=1500,
                                     batch_size=32, epochs=2, lr=0.05, warmup=0.5, device="cpu", seed=0,
                                     out=str(out)), progress=False, verbose=False).fit()
    finally:
        torch.set_num_threads(before)
    assert result.final_acc > 0.85, "the model did not learn: what is measured on it would mean nothing"
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: two OpenMP threads per test process (pytest -n 2) on a
    shared 2-core machine oversubscribe badly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# CPU features a test needs: name -> (engine, precision, the support levels that count as having it).
# ``@pytest.mark.requires_cpu("bf16")`` skips the test where this CPU lacks it, the reason naming the
# missing features; the refusal on such CPUs is tested on every machine (test_cpu.py, under ONEDNN_MAX_CPU_ISA).
CPU_FEATURES = {"bf16": ("torch", "bf16", (NATIVE, EMULATED)),
                "native-bf16": ("torch", "bf16", (NATIVE,)),
                "vnni": ("torch", "int8", (NATIVE,))}


def pytest_configure(config):
    config.addinivalue_line("markers", "requires_cpu(feature): needs a CPU feature (conftest.CPU_FEATURES); "
                            "skipped with the missing feature named where this CPU lacks it")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires_cpu"):
        from resnetkit.deploy.cpu import cpu
        from resnetkit.deploy.engines import ENGINES

        engine, dtype, levels = CPU_FEATURES[mark.args[0]]
        support = ENGINES[engine].support(dtype)
        if support.level not in levels:
            pytest.skip(f"needs a CPU with {support.needs} ({engine} {dtype} is {support.level} on this "
                        f"{cpu().level} CPU)")
