"""What this CPU runs natively: the one place in resnetkit that reads CPU features.

Which precision is fast depends on the instruction set: bf16 needs AVX512-BF16
or AMX-BF16 (oneDNN *emulates* it with AVX-512 BW/VL/DQ or AVX-NE-CONVERT and
refuses it below), int8 is fast with VNNI or AMX-INT8 (without them torch's
int8 crawls, while ONNX Runtime and OpenVINO keep AVX2 int8 kernels). Engines
ask :func:`cpu` (flags) and, for OpenVINO, :func:`openvino_capabilities`;
nothing else parses flags.

The flags are those of ``/proc/cpuinfo`` (on other systems: torch's ATen
capability), capped by ``ONEDNN_MAX_CPU_ISA`` when it is set, because oneDNN
(inside torch) then really stops using the instructions above the cap:
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` makes an AVX-512 machine
refuse torch bf16 exactly as an AVX2-only one does.
"""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

# Flag -> the name people know it by (Intel's and AMD's manuals, oneDNN's docs).
FEATURE_NAMES = {
    "avx2": "AVX2", "fma": "FMA", "f16c": "F16C", "avx_vnni": "AVX-VNNI", "avx_ne_convert": "AVX-NE-CONVERT",
    "avx512f": "AVX-512F", "avx512bw": "AVX512-BW", "avx512vl": "AVX512-VL", "avx512dq": "AVX512-DQ",
    "avx512_vnni": "AVX512-VNNI", "avx512_bf16": "AVX512-BF16", "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX-TILE", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8", "amx_fp16": "AMX-FP16",
    "asimd": "NEON", "sve": "SVE", "bf16": "BF16 (Arm)", "i8mm": "I8MM (Arm)",
}

# Instructions that compute in a precision natively, best first.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")

# ONEDNN_MAX_CPU_ISA levels (oneDNN's "CPU dispatcher controls"), lowest first, and the rank
# from which each flag may be used.
_ISA_RANK = {"SSE41": 0, "AVX": 1, "AVX2": 2, "AVX2_VNNI": 3, "AVX2_VNNI_2": 4, "AVX512_CORE": 5,
             "AVX512_CORE_VNNI": 6, "AVX512_CORE_BF16": 7, "AVX512_CORE_FP16": 8, "AVX10_1_512": 8,
             "AVX512_CORE_AMX": 9, "AVX10_1_512_AMX": 9, "AVX512_CORE_AMX_FP16": 10,
             "AVX10_1_512_AMX_FP16": 10, "ALL": 99, "DEFAULT": 99}
_FLAG_RANK = {"avx": 1, "avx2": 2, "fma": 2, "f16c": 2, "avx_vnni": 3, "avx_ne_convert": 4, "avx_vnni_int8": 4,
              "avx512f": 5, "avx512bw": 5, "avx512vl": 5, "avx512dq": 5, "avx512cd": 5, "avx512_vnni": 6,
              "avx512_bf16": 7, "avx512_fp16": 8, "amx_tile": 9, "amx_int8": 9, "amx_bf16": 9, "amx_fp16": 10}


@dataclass(frozen=True)
class CPU:
    """This machine's CPU as the engines see it."""

    model: str
    cores: int
    flags: frozenset[str]           # usable ISA flags (cpuinfo, capped by ONEDNN_MAX_CPU_ISA)
    cap: str | None = None          # ONEDNN_MAX_CPU_ISA, when set
    aten: str = ""                  # torch's ATen vector level (AVX2, AVX512, ...)
    hardware: frozenset[str] = frozenset()  # every flag, cap or not (ONNX Runtime's MLAS ignores the cap)

    def has(self, *flags: str, uncapped: bool = False) -> bool:
        """True if every one of ``flags`` is usable here (``uncapped``: by code that ignores ONEDNN_MAX_CPU_ISA)."""
        return all(f in (self.hardware if uncapped else self.flags) for f in flags)

    def first(self, *flags: str, uncapped: bool = False) -> str | None:
        """The first of ``flags`` usable here (e.g. the best of :data:`BF16_FLAGS`), or None."""
        return next((f for f in flags if self.has(f, uncapped=uncapped)), None)

    @property
    def level(self) -> str:
        """The short name of this CPU's best matrix instructions: AMX, AVX512-BF16, AVX512-VNNI, AVX-512, ..."""
        for flags, name in ((("amx_bf16", "amx_int8"), "AMX"), (("avx512_bf16",), "AVX512-BF16"),
                            (("avx512_vnni",), "AVX512-VNNI"), (("avx512f",), "AVX-512"),
                            (("avx_vnni",), "AVX2+VNNI"), (("avx2",), "AVX2"), (("asimd",), "NEON")):
            if self.has(*flags):
                return name
        return self.aten or "baseline"

    def feature_names(self) -> list[str]:
        """The ISA features that matter for inference, as people name them, in :data:`FEATURE_NAMES` order."""
        return [name for flag, name in FEATURE_NAMES.items() if flag in self.flags]


def _read_cpuinfo() -> tuple[str, set[str]]:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model name", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags


def _flags_from_aten(level: str) -> set[str]:
    """A floor of flags from torch's own detection, where /proc/cpuinfo is not there (macOS, Windows)."""
    level = level.upper()
    if level.startswith("AVX512"):
        return {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
    if level.startswith("AVX2"):
        return {"avx2", "fma"}
    return {"asimd"} if platform.machine().lower() in ("arm64", "aarch64") else set()


def apply_cap(flags: set[str] | frozenset[str], cap: str | None) -> frozenset[str]:
    """``flags`` without those above oneDNN's ``ONEDNN_MAX_CPU_ISA`` level (unknown levels cap nothing)."""
    rank = _ISA_RANK.get((cap or "ALL").upper(), 99)
    return frozenset(f for f in flags if _FLAG_RANK.get(f, 0) <= rank)


@functools.lru_cache(maxsize=1)
def cpu() -> CPU:
    """This CPU, read once per process."""
    aten = torch.backends.cpu.get_cpu_capability()
    model, flags = _read_cpuinfo()
    if not flags:
        flags = _flags_from_aten(aten)
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or None
    return CPU(model or platform.processor() or platform.machine() or "unknown CPU", os.cpu_count() or 1,
               apply_cap(flags, cap), cap, aten, frozenset(flags))


@functools.lru_cache(maxsize=1)
def openvino_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says it runs here (``OPTIMIZATION_CAPABILITIES``: FP32, BF16, INT8, ...)."""
    import openvino as ov

    return frozenset(str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def torch_bf16_runs() -> bool:
    """Whether torch's oneDNN accepts bf16 convolutions here (natively or emulated): torch's own check,
    which honours ONEDNN_MAX_CPU_ISA."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def fp32_isa() -> str:
    """The widest vector instructions fp32 kernels use here: AVX-512F, AVX2, NEON or the baseline."""
    flag = cpu().first("avx512f", "avx2", "asimd")
    return names(flag) if flag else cpu().aten


def names(*flags: str) -> str:
    """'AVX512-BF16 or AMX-BF16' for ``("avx512_bf16", "amx_bf16")``."""
    return " or ".join(FEATURE_NAMES.get(f, f.upper()) for f in flags)
