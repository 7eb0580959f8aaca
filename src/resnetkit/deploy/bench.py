"""The engine of ``resnetkit bench`` and ``benchmarks/inference.py``.

Every contender runs in the same process on the same input. They are timed
in *rotating blocks* (A×k, B×k, C×k, then B, C, A, ...; each block after one
untimed re-warm call) by :func:`~.autoselect.time_blocks`, the timer
``backend="auto"`` uses: ONNX Runtime's and OpenVINO's worker threads keep
spinning after a call, and single alternating calls would charge that to
whichever contender runs next; a short idle pause before each block lets them
settle. Rotation still spreads machine noise (other
processes, frequency changes) over all of them, so the ratios hold when
absolute numbers drift. Achieved GFLOP/s are set against a ceiling measured
on the spot (:mod:`.ceilings`: a kernel that really exists on this CPU).

Contenders (:func:`contenders`): the reference model's eager fp32 run (the
1.00× baseline), each engine configured as its own documentation says
(:mod:`.peers`), resnetkit's ``optimize_for_inference`` on each engine, and
resnetkit's ``backend="auto"``.
"""
from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ResnetkitValueError
from .ceilings import measure_ceiling  # noqa: F401  (bench's public helper; lives with the other ceilings)
from .engines.base import NOT_OFFERED
from .peers import PEER_LABELS, Contender

Runner = Callable[[torch.Tensor], Any]


# ------------------------------------------------------------------ counting
def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates for ONE image (paper convention; ResNet-50 at 224×224: 4.09 G), from ``summary``."""
    from ..inspect import summary

    return summary(model, (1, *input_size[1:]), depth=0).total_macs


# ------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Per-call wall times (seconds) of one contender, and what they mean for ``batch`` images."""

    name: str
    batch: int
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p90(self) -> float:
        s = sorted(self.times)
        return s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median


@torch.no_grad()
def time_contenders(runners: dict[str, Runner], x: torch.Tensor, iters: int = 10, warmup: int = 2,
                    rounds: int = 5, cooldown_s: float = 0.05) -> dict[str, Timing]:
    """About ``iters`` timed calls of each runner on ``x``, in ``rounds`` rotating blocks (:func:`time_blocks`).

    Each runner first gets ``warmup`` untimed calls (at least one), and one
    more before each of its blocks, after a ``cooldown_s`` pause (see
    :func:`time_blocks`: without it a contender following one of its own engine
    started with warm worker threads).
    """
    from .autoselect import time_blocks

    if iters < 1:
        raise ResnetkitValueError(f"iters must be >= 1, got {iters}")
    rounds = max(1, min(rounds, iters))
    per_block = -(-iters // rounds)
    for run in runners.values():
        for _ in range(max(0, warmup - 1)):  # time_blocks makes one more untimed call itself
            run(x)
    # A budget that never runs out: the call count alone (per_block per block) bounds the timing.
    times = time_blocks(runners, x, budget_s=1e9, max_calls=per_block * rounds, rounds=rounds, cooldown_s=cooldown_s)
    return {n: Timing(n, x.shape[0], t) for n, t in times.items()}


# ---------------------------------------------------------------- contenders
def reference_model(name: str) -> tuple[nn.Module, str] | None:
    """The model users would otherwise run: torchvision's of that name, else timm's; None if neither."""
    try:
        import torchvision.models as tvm

        if name in tvm.list_models(module=tvm):
            return tvm.get_model(name, weights=None).eval(), "torchvision"
    except ImportError:
        pass
    try:
        import timm

        if name in timm.list_models():
            return timm.create_model(name, pretrained=False).eval(), "timm"
    except ImportError:
        pass
    return None


@torch.no_grad()
def give_trained_like_bn_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm the statistics of a trained net (mean ≈ 0 ± 0.1, var ≈ 0.75–1.25, γ ≈ 0.3–0.7).

    A freshly initialised net in eval mode (mean 0, var 1, γ 1) is degenerate:
    mobilenet_v2's logits come out near 1e-9 for every input, so any int8
    build "deviates" by 100% and ``backend="auto"`` rightly refuses it. With
    these statistics activations keep a trained net's scale and the deviation
    check means what it means for a real checkpoint. Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=g) * 0.4 + 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.05)
    return model


def model_pair(name: str) -> tuple[nn.Module, str, nn.Module, str]:
    """(reference model, its label, resnetkit model, its label) with the same weights, in eval mode.

    The reference is torchvision's/timm's model of that name (layouts are
    identical, so resnetkit's loads its state dict). Without a reference the
    baseline is resnetkit's own eager model; a name that torchvision/timm know
    but resnetkit has not registered gets the reference model itself as
    "ours", so the optimisations can still be measured on the same graph.
    Weights are random with trained-like BN statistics (see
    :func:`give_trained_like_bn_stats`): speed does not depend on them.
    """
    from ..registry import create_model, list_models

    ref = reference_model(name)
    if ref is not None:
        give_trained_like_bn_stats(ref[0])
    if name not in list_models():
        if ref is None:
            create_model(name)  # raises the registry's "unknown model ... did you mean" error
        return ref[0], f"{ref[1]} eager fp32", ref[0], f"{ref[1]} model"
    ours = create_model(name).eval()
    if ref is None:
        return give_trained_like_bn_stats(ours), "resnetkit eager fp32", ours, "resnetkit"
    ours.load_state_dict(ref[0].state_dict())
    return ref[0], f"{ref[1]} eager fp32", ours, "resnetkit"


def parse_backends(text: str | None) -> list[str] | None:
    """``--backends``: None (resnetkit's torch engine only), "all", or "torch,openvino" → engine names."""
    from .engines import ENGINES

    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return list(ENGINES)
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise ResnetkitValueError(f"--backends: unknown backend {unknown[0] if unknown else text!r}; "
                                  f"use 'all' or a comma-separated list of {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def resnetkit_contender(model: nn.Module, backend: str | list[str], dtype: str, x: torch.Tensor,
                        calibration: torch.Tensor | None, compile: bool = False,
                        budget_s: float = 30.0) -> Contender:
    """``optimize_for_inference`` on one engine (or ``backend="auto"``/a list: the auto row) as a Contender."""
    from .engines import get_engine
    from .optimize import optimize_for_inference

    auto = not isinstance(backend, str) or backend == "auto"
    label = f"resnetkit {'auto' if auto else backend} {dtype}" + (" compiled" if compile else "")
    row = Contender(label, dtype, "auto" if auto else "resnetkit", "auto" if auto else backend)
    if not auto:
        engine = get_engine(backend)
        if dtype not in engine.dtypes:
            row.status, row.note = "not offered", f"{backend} has no {dtype} CPU kernels"
            return row
        if not engine.available(dtype):
            row.status, row.note = "not installed", f"needs {', '.join(engine.missing(dtype))}"
            return row
        support = engine.support(dtype)
        if support.level == NOT_OFFERED:
            row.status, row.note = "not on this CPU", f"needs {support.needs}"
            return row
        if not support.native:
            row.note = f"{support.level} here: needs {support.needs}"
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():  # auto warns about each candidate it cannot build: the note says it
            warnings.simplefilter("ignore")
            fast = optimize_for_inference(model, dtype=dtype, backend=backend, input_size=tuple(x.shape),
                                          calibration=calibration, compile=compile, budget_s=budget_s)
        fast(x)  # the first call (compile=True compiles here), outside the timing
    except Exception as e:  # noqa: BLE001 - one engine failing must not stop the bench
        row.status, row.note = "failed", f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:100]}"
        return row
    row.runner, row.build_s = fast, time.perf_counter() - t
    if fast.dtype == "bf16" and "f32" in str(fast.describe().get("compute", "")):  # OpenVINO's silent fallback
        row.note = "OpenVINO runs f32 for bf16 here"
    if auto:
        chosen = fast.report.chosen if fast.report is not None else None
        row.note, row.dtype = f"chose {chosen.label if chosen else fast.backend + ' ' + fast.dtype}", fast.dtype
        row.engine = f"auto: {fast.backend}"
    return row


def contenders(model: str | tuple, dtype: str, x: torch.Tensor, backends: list[str] | None, compile_peer: bool = True,
               compile: bool = False, auto_budget_s: float = 30.0, workdir: str | None = None,
               progress: Callable[[str], None] | None = None) -> tuple[list[Contender], nn.Module]:
    """Every contender for ``model`` (a name, or :func:`model_pair`'s result) in ``dtype`` on input ``x``, built now.

    ``backends`` None: the baseline and resnetkit's torch engine (``compile``:
    compiled too). Otherwise, for each named engine its own-config peer
    (torch: ``torch.compile`` with freezing, unless not ``compile_peer``) and
    resnetkit on it, then resnetkit's auto over those engines. int8 calibrates
    on random data: speed only. Returns (contenders, resnetkit's eager model).
    """
    import tempfile

    from .peers import build_peer

    say = progress or (lambda msg: None)
    ref, baseline, ours, _ = model_pair(model) if isinstance(model, str) else model
    workdir = workdir or tempfile.mkdtemp(prefix="resnetkit-bench-")
    calib = torch.randn(max(16, 2 * x.shape[0]), *x.shape[1:], generator=torch.Generator().manual_seed(2)) \
        if dtype == "int8" else None
    rows = [Contender(baseline, "fp32", "baseline", "torch", ref)]
    engines = backends or ["torch"]
    if backends is not None:
        for engine in engines:
            peer = "torch.compile" if engine == "torch" else engine
            if peer == "torch.compile" and not compile_peer:
                continue
            say(f"building {PEER_LABELS[peer]} {dtype} ...")
            row = build_peer(peer, ref, dtype, x, list(calib.split(x.shape[0])) if calib is not None else None,
                             workdir)
            rows.append(row)
            say(f"  {row.status} ({row.build_s:.0f} s) {row.note}".rstrip())
    for engine in engines:
        for comp in ([False, True] if compile and engine == "torch" and dtype != "int8" else [False]):
            say(f"building resnetkit {engine} {dtype}{' compiled' if comp else ''} ...")
            rows.append(resnetkit_contender(ours, engine, dtype, x, calib, compile=comp))
            say(f"  {rows[-1].status} ({rows[-1].build_s:.0f} s) {rows[-1].note}".rstrip())
    if backends is not None:
        say(f"building resnetkit auto {dtype} (times its candidates for about {auto_budget_s:g} s) ...")
        from .engines import ENGINES

        auto_backend: Any = "auto" if set(engines) == set(ENGINES) else engines
        rows.append(resnetkit_contender(ours, auto_backend, dtype, x, calib, budget_s=auto_budget_s))
        say(f"  {rows[-1].status} ({rows[-1].build_s:.0f} s) {rows[-1].note}".rstrip())
    return rows, ours


def time_rows(rows: list[Contender], x: torch.Tensor, iters: int, warmup: int) -> dict[str, Timing]:
    """Time every contender that was built, in rotating blocks; keyed by label."""
    return time_contenders({r.label: r.runner for r in rows if r.runner is not None}, x, iters, warmup)


def best_peer(rows: list[Contender], timings: dict[str, Timing]) -> Contender | None:
    """The fastest timed peer (baseline included: eager fp32 is a peer too)."""
    peers = [r for r in rows if r.kind in ("baseline", "peer") and r.label in timings]
    return max(peers, key=lambda r: timings[r.label].images_per_s, default=None)


# ------------------------------------------------------------------- report
def format_report(rows: list[Contender], timings: dict[str, Timing], macs: int,
                  ceilings: dict[str, float]) -> str:
    """A plain-text table: images/s, latency median/p90, GFLOP/s, % of ceiling, × baseline, note.

    The first row is the baseline. Rows without a timing (not offered, not
    installed, failed) show their status instead of numbers.
    """
    base = timings[rows[0].label].images_per_s
    width = max(len(r.label) for r in rows) + 2
    lines = [f"{'':{width}}{'img/s':>9}{'median ms':>11}{'p90 ms':>9}{'GFLOP/s':>9}{'of ceiling':>16}"
             f"{'speed-up':>10}  note"]
    for r in rows:
        t = timings.get(r.label)
        if t is None:
            lines.append(f"{r.label:{width}}{r.status:>64}  {r.note}")
            continue
        gflops = 2 * macs * t.images_per_s / 1e9
        ceil = ceilings.get(r.dtype)
        pct = f"{100 * gflops / ceil:.0f}% of {r.dtype}" if ceil else "-"
        lines.append(f"{r.label:{width}}{t.images_per_s:9.1f}{1e3 * t.median:11.1f}{1e3 * t.p90:9.1f}"
                     f"{gflops:9.1f}{pct:>16}{t.images_per_s / base:9.2f}x  {r.note}".rstrip())
    return "\n".join(lines)


def parse_input_size(text: str, batch_one: bool = False) -> tuple[int, int, int, int]:
    """'1x3x224x224' (or with ×) → (1, 3, 224, 224); with ``batch_one``, 'C x H x W' too, as torchinfo and
    the books write it → (1, C, H, W). A wrong form or size names the dimension at fault."""
    parts = text.lower().replace("×", "x").split("x")
    if batch_one and len(parts) == 3:
        parts = ["1", *parts]
    if len(parts) != 4:
        alone = " (or C x H x W for batch 1)" if batch_one else ""
        raise ResnetkitValueError(f"--input {text}: give 4 sizes N x C x H x W (batch, channels, height, width){alone}, "
                                  f"e.g. 1x3x224x224; got {len(parts)}")
    size = []
    for dim, part in zip(("N (batch)", "C (channels)", "H (height)", "W (width)"), parts):
        try:
            value = int(part.strip())
        except ValueError:
            raise ResnetkitValueError(f"--input {text}: {dim} is {part.strip()!r}, not a whole number; "
                                      "e.g. 1x3x224x224") from None
        if value < 1:
            raise ResnetkitValueError(f"--input {text}: {dim} is {value}; every size must be a positive integer, "
                                      "e.g. 1x3x224x224")
        size.append(value)
    return tuple(size)  # type: ignore[return-value]
