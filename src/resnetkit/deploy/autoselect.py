"""``backend="auto"`` / ``dtype="auto"``: build every candidate, drop the inaccurate ones, time the rest.

Each candidate (engine × precision, plus torch.compile when asked) is built for
the given input shape and run on the same check batch as the float32 eager
model. Its *deviation* is the relative error ||out − ref|| / ||ref|| over all
outputs; a candidate above its precision's tolerance is refused. With
``dtype="auto"`` a classifier must also agree with the float32 model's top-1
on the calibration data to within the accuracy budget (default 0.5 points).
The survivors are timed in rotating blocks (A×k, B×k, C×k, then B, C, A ...)
within a time budget, and the one with the lowest median latency wins. Blocks
rather than single alternating calls: ONNX Runtime's and OpenVINO's worker
threads keep spinning after a call and would slow whichever contender runs next.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .engines.base import flat_outputs

# Largest relative error accepted for each precision (the tests' tolerances; int8's allows for
# per-tensor activation ranges on deep nets, where top-1 agreement is the real check).
TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "int8": 0.25}


@dataclass
class Candidate:
    """One row of ``.report``."""

    backend: str
    dtype: str
    variant: str = ""                 # "compiled" for torch.compile
    status: str = "pending"           # chosen / ok / inaccurate / failed / not installed / not offered / not on this CPU / skipped
    latency_ms: float | None = None   # median per call at the built batch size
    deviation: float | None = None    # relative error against the fp32 eager model
    agreement: float | None = None    # top-1 agreement with the fp32 model on the calibration data
    note: str = ""
    build_s: float | None = None
    runner: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.dtype}" + (f" {self.variant}" if self.variant else "")

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("backend", "dtype", "variant", "status", "latency_ms", "deviation",
                                               "agreement", "note", "build_s")}


class Report(list):
    """The candidates ``auto`` considered, in the order built; ``str()`` gives a table, then the input
    shapes the chosen engine has compiled so far (``shapes``, read when printed: a new batch size compiles
    on its first call)."""

    shapes: Callable[[], list[tuple[int, ...]]] | None = None

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self if c.status == "chosen"), None)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self]

    @classmethod
    def from_dicts(cls, rows: list[dict[str, Any]]) -> "Report":
        return cls(Candidate(**row) for row in rows)

    def __str__(self) -> str:
        w = max([24, *(len(c.label) + 2 for c in self)])
        lines = [f"{'candidate':{w}}{'status':>16}{'latency ms':>12}{'deviation':>11}{'top-1 agree':>13}  note"]
        for c in self:
            lat = f"{c.latency_ms:.2f}" if c.latency_ms is not None else "-"
            dev = f"{c.deviation:.2e}" if c.deviation is not None else "-"
            agr = f"{100 * c.agreement:.2f}%" if c.agreement is not None else "-"
            lines.append(f"{c.label:{w}}{c.status:>16}{lat:>12}{dev:>11}{agr:>13}  {c.note}")
        if self.shapes is not None and self.chosen is not None:
            lines.append(f"{self.chosen.label} compiled for: " + ", ".join("×".join(map(str, s)) for s in self.shapes()))
        return "\n".join(lines)


def relative_error(ref: Any, got: Any) -> float:
    """max over outputs of ||got − ref|| / ||ref||."""
    errs = []
    for a, b in zip(flat_outputs(ref), flat_outputs(got), strict=True):
        a, b = a.float(), b.float()
        if a.shape != b.shape:
            return float("inf")
        errs.append(((b - a).norm() / a.norm().clamp_min(1e-12)).item())
    return max(errs)


def top1_agreement(reference_top1: torch.Tensor, runner: Callable, batches: list[torch.Tensor]) -> float:
    got = torch.cat([runner(b)[0].argmax(1) for b in batches])
    return (got == reference_top1).float().mean().item()


@torch.no_grad()
def time_blocks(runners: dict[str, Callable], x: torch.Tensor, budget_s: float,
                max_calls: int = 200, rounds: int = 5, cooldown_s: float = 0.05) -> dict[str, list[float]]:
    """Per-call wall times of each runner on ``x``, in rotating blocks, within about ``budget_s`` seconds.

    Before each block the machine idles ``cooldown_s`` and the runner gets one
    untimed call: rotation keeps the cyclic order, so without the pause each
    runner would always follow the same neighbour and inherit (or be spared)
    its still-spinning worker threads.
    """
    names = list(runners)
    single = {}
    for n in names:  # one untimed call (warm-up), then one timed: the block sizes follow from it
        runners[n](x)
        t = time.perf_counter()
        runners[n](x)
        single[n] = max(time.perf_counter() - t, 1e-6)
    times: dict[str, list[float]] = {n: [] for n in names}
    slice_s = max(budget_s, 1e-3) / (rounds * len(names))
    start = time.perf_counter()
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            calls = max(1, min(int(slice_s / single[n]), max_calls // rounds))
            time.sleep(cooldown_s)
            runners[n](x)  # re-warm caches after the other contender
            for _ in range(calls):
                t = time.perf_counter()
                runners[n](x)
                times[n].append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and r >= 1:
            break
    return times


def choose(candidates: list[Candidate], x: torch.Tensor, budget_s: float) -> Report:
    """Time the accepted candidates, mark the fastest ``chosen``; returns them all as a Report."""
    ok = [c for c in candidates if c.status == "ok"]
    if ok:
        times = time_blocks({c.label: c.runner for c in ok}, x, budget_s)
        for c in ok:
            c.latency_ms = 1e3 * statistics.median(times[c.label])
        min(ok, key=lambda c: c.latency_ms).status = "chosen"
    return Report(candidates)
