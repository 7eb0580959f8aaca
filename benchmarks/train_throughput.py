"""Training throughput (images/s) of `resnetkit train --amp` (bf16 autocast + channels_last)
against plain fp32 eager NCHW, same model, same batch, alternating in one process.

    .venv/bin/python benchmarks/train_throughput.py                       # d2l_resnet18, 28x28, batch 128
    .venv/bin/python benchmarks/train_throughput.py --model resnet50 --size 224 --batch 32 --in-chans 3

One timed unit is a full training step as the Trainer runs it: forward, label-smoothed
cross-entropy, backward, SGD (Nesterov, weight decay) step. Weights are random; speed
does not depend on them. Run it by hand (it is not part of `make test`).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import resnetkit as rk
from resnetkit.train.evaluate import autocast
from resnetkit.train.trainer import param_groups


def make_step(model: nn.Module, amp: bool, channels_last: bool):  # noqa: ANN201
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    opt = torch.optim.SGD(param_groups(model, 5e-4), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    device = torch.device("cpu")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.contiguous(memory_format=fmt)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="d2l_resnet18")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--in-chans", type=int, default=None, help="default: the model's own")
    p.add_argument("--iters", type=int, default=8, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = rk.create_model(args.model, num_classes=10)
    chans = args.in_chans or base.default_input_size[0]
    x = torch.randn(args.batch, chans, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    variants = {"fp32 eager NCHW": make_step(copy.deepcopy(base), amp=False, channels_last=False),
                "--amp (bf16 autocast + channels_last)": make_step(copy.deepcopy(base), amp=True, channels_last=True)}
    for step in variants.values():
        for _ in range(args.warmup):
            step(x, y)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.iters):  # alternate so that load from other processes hits both alike
        for name, step in variants.items():
            t = time.perf_counter()
            step(x, y)
            times[name].append(time.perf_counter() - t)
    print(f"{args.model} training step, batch {args.batch}, input {chans}x{args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, {args.iters} steps each after {args.warmup} warm-up (alternating)")
    base_ips = None
    for name, ts in times.items():
        ips = args.batch / statistics.median(ts)
        base_ips = base_ips or ips
        print(f"  {name:<40} {ips:8.1f} img/s  (median step {1e3 * statistics.median(ts):7.1f} ms, "
              f"min {1e3 * min(ts):7.1f} ms)  x{ips / base_ips:.2f}")


if __name__ == "__main__":
    main()
