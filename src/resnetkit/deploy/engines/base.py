"""The small interface every inference engine implements: build, run, describe, save, load.

An engine turns a float32 eval-mode ``nn.Module`` into a :class:`Runner` for
one precision. A runner takes a float32 NCHW torch tensor and returns the
model's outputs as a flat list of float32 torch tensors (one for a classifier,
one per level for a ``features_only`` backbone); :class:`~..runtime.InferenceModel`
puts them back into the model's own structure. Engines that need a package
import it inside ``build``/``load`` only, so ``import resnetkit`` needs none of them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ...errors import ResnetkitError
from ..fold import flat_outputs  # noqa: F401  (engines and auto share it)

DTYPES = ("fp32", "bf16", "int8")

# How an engine runs a precision on this CPU (``Engine.support``): ``auto`` builds only NATIVE cells,
# an explicit request builds EMULATED and AS_FP32 ones with a warning and refuses NOT_OFFERED ones.
NATIVE, EMULATED, AS_FP32, NOT_OFFERED = "native", "emulated (slow)", "runs fp32", "not offered"


@dataclass(frozen=True)
class Support:
    """One (engine, precision) cell on this CPU: ``level`` (one of the four above), the ``kernels`` that run it,
    the CPU features it ``needs`` to be native, and a ``note`` saying why."""

    level: str
    kernels: str = ""
    needs: str = ""
    note: str = ""

    @property
    def native(self) -> bool:
        return self.level == NATIVE

    def cell(self) -> str:
        """What ``resnetkit doctor`` prints for it: 'native (AMX-BF16)', 'not offered (needs AVX512-BF16 ...)'."""
        if self.level == NATIVE:
            return f"native ({self.kernels})" if self.kernels else "native"
        return f"{self.level}, needs {self.needs}" if self.needs else f"{self.level} ({self.note})"


class MissingEngineError(ResnetkitError, ImportError):
    """An engine's package is not installed: one line naming the extra that installs it."""


class EngineError(ResnetkitError, ValueError):
    """An engine cannot do what was asked (a precision it lacks, a shape it was not built for, ...)."""


@dataclass
class BuildRequest:
    """Everything an engine needs to build a runner, decided once by ``optimize_for_inference``.

    ``input_size`` is (N, C, H, W): N is the batch the engine may specialise for,
    C×H×W what it is built for. ``calibration`` is a list of float32 batches of that
    C×H×W (int8 only). ``outputs`` names the flat outputs (``logits`` or ``feat0``...).
    """

    model: nn.Module
    dtype: str
    input_size: tuple[int, int, int, int]
    calibration: list[torch.Tensor] | None = None
    outputs: list[str] = field(default_factory=lambda: ["logits"])
    workdir: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Runner:
    """A built model: ``runner(x)`` → flat list of float32 tensors. Subclasses set ``dynamic_batch``."""

    dynamic_batch: bool = True

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What really runs: engine version, precision the engine reports, settings."""
        return {}

    def save(self, directory: str) -> list[str]:
        """Write what the engine loads into ``directory``; return the file names written."""
        raise EngineError(f"{type(self).__name__} cannot be saved as an engine file; "
                          "export with format='onnx' or format='openvino'")


class PerShape:
    """What an engine builds for one input shape (a compiled model, a session), built on first use; the
    first shape (the one the user built for) stays, and at most ``limit`` are kept, the oldest other one
    going first. Engines whose kernels and memory plan are fixed at compile time run a known shape
    faster than a free one (OpenVINO's and ONNX Runtime's advice; measured in the engine modules)."""

    def __init__(self, make: Any, limit: int = 4) -> None:
        self._make, self._built, self.limit = make, {}, limit

    def get(self, shape: tuple[int, ...]) -> Any:
        built = self._built.get(shape)
        if built is None:
            if len(self._built) >= self.limit:
                self._built.pop(list(self._built)[1])
            built = self._built[shape] = self._make(shape)
        return built

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """The shapes built so far, the first one first."""
        return list(self._built)

    @property
    def first(self) -> Any:
        return next(iter(self._built.values()))


class Engine:
    """One inference engine. Subclasses set the class attributes and implement build (and load)."""

    name: str = ""
    packages: tuple[str, ...] = ()    # import names that must be installed (none: always available)
    extra: str = "deploy"             # pip extra that installs it
    dtypes: tuple[str, ...] = DTYPES  # precisions it can compute in
    file_format: str | None = None    # what export writes for it ("onnx", "openvino")

    def missing(self, dtype: str | None = None) -> list[str]:
        """The packages this engine (for ``dtype``) needs that are not installed."""
        return [p for p in (*self.packages, *self.packages_for(dtype)) if importlib.util.find_spec(p) is None]

    def packages_for(self, dtype: str | None) -> tuple[str, ...]:
        """Packages needed only for one precision (OpenVINO's int8 needs NNCF)."""
        return ()

    def available(self, dtype: str | None = None) -> bool:
        return not self.missing(dtype)

    def require(self, dtype: str | None = None) -> None:
        missing = self.missing(dtype)
        if missing:
            what = f"{dtype} on backend {self.name!r}" if dtype and self.packages_for(dtype) else f"backend {self.name!r}"
            raise MissingEngineError(f"{what} needs {', '.join(missing)}, not installed: "
                                     f"pip install 'resnetkit[{self.extra}]'")

    def support(self, dtype: str) -> Support:
        """How this engine runs ``dtype`` on this CPU (:mod:`..cpu`); engines with CPU-dependent kernels override."""
        if dtype not in self.dtypes:
            return Support(NOT_OFFERED, note=f"no {dtype} CPU kernels")
        return Support(NATIVE)

    def check_dtype(self, dtype: str) -> Support:
        """Refuse, at build time, a precision this engine cannot run on this CPU (naming what runs instead);
        warn about one it runs only slowly or in fp32. Returns the cell."""
        from ..cpu import cpu

        if dtype not in self.dtypes:
            raise EngineError(f"backend {self.name!r} does not compute in {dtype}; it offers "
                              f"{', '.join(self.dtypes)}. {runs_here(exclude=(self.name, dtype))}")
        s = self.support(dtype)
        if s.level == NOT_OFFERED:
            raise EngineError(f"{self.name} {dtype} does not run on this CPU ({cpu().model}, {cpu().level}): it needs "
                              f"{s.needs} ({s.note}). {runs_here(exclude=(self.name, dtype))}")
        if s.level != NATIVE:
            warnings.warn(f"{self.name} {dtype} on this CPU ({cpu().level}): {s.note}; to be native it needs "
                          f"{s.needs}. {runs_here(exclude=(self.name, dtype))}", stacklevel=3)
        return s

    def build(self, request: BuildRequest) -> Runner:
        raise NotImplementedError

    def load(self, directory: str, meta: dict[str, Any]) -> Runner:
        raise EngineError(f"backend {self.name!r} has no file format to load from")

    def version(self) -> str:
        return "?"


def runs_here(exclude: tuple[str, str] | None = None) -> str:
    """'Native here: fp32 on torch, onnxruntime, openvino; int8 on ...' over the installed engines
    (``resnetkit doctor`` shows the whole table)."""
    from . import ENGINES

    by_dtype: dict[str, list[str]] = {}
    for d in DTYPES:
        for e in ENGINES.values():
            if (e.name, d) != exclude and e.available(d) and e.support(d).native:
                by_dtype.setdefault(d, []).append(e.name)
    cells = "; ".join(f"{d} on {', '.join(names)}" for d, names in by_dtype.items())
    return f"Native on this CPU: {cells or 'nothing installed'} (`resnetkit doctor` shows the table)."


def as_numpy_batches(batches: Sequence[torch.Tensor]) -> list:
    return [b.detach().float().contiguous().numpy() for b in batches]


def thread_count() -> int:
    """Threads every engine uses: the same as torch's, so comparisons are fair."""
    return torch.get_num_threads()


@contextlib.contextmanager
def build_folder(request: BuildRequest, prefix: str) -> Iterator[str]:
    """Where an engine writes its intermediate files: ``request.workdir`` (kept), else a temporary
    folder removed afterwards (engines keep what they run in memory)."""
    if request.workdir:
        os.makedirs(request.workdir, exist_ok=True)
        yield request.workdir
        return
    with tempfile.TemporaryDirectory(prefix=f"resnetkit-{prefix}-") as folder:
        yield folder
