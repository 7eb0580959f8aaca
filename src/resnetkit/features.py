"""Multi-scale features, written once for every family from its ``feature_info``.

Each model lists its *levels*: level i is the output of the last module that
runs at reduction 2^(i+1) (the FPN convention; index 0 = stem/C1, 1-4 = C2-C5).
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from .errors import ResnetkitValueError


class FeatureInfo(list):
    """A list of ``{"num_chs", "reduction", "module"}`` dicts with timm's helpers."""

    def __init__(self, levels: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(dict(level) for level in levels)

    def channels(self) -> list[int]:
        return [level["num_chs"] for level in self]

    def reduction(self) -> list[int]:
        return [level["reduction"] for level in self]

    def module_name(self) -> list[str]:
        return [level["module"] for level in self]

    def select(self, indices: Sequence[int]) -> "FeatureInfo":
        return FeatureInfo(self[i] for i in indices)


def _as_index(value: Any) -> int | None:
    """``value`` as a level number: any integral type (int, numpy, 0-d tensor); None for bool, 1.0, "1"."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_out_indices(out_indices: Sequence[int] | None, num_levels: int, model_name: str = "model") -> tuple[int, ...]:
    """Normalise ``out_indices`` (default: all levels; negative counts from the end)."""
    if out_indices is None:
        return tuple(range(num_levels))
    if isinstance(out_indices, str) or not isinstance(out_indices, Iterable) or _as_index(out_indices) is not None:
        out_indices = (out_indices,)  # a single level
    out_indices = tuple(out_indices)
    if len(out_indices) == 0:
        raise ResnetkitValueError(f"out_indices is empty; {model_name} has levels 0..{num_levels - 1} (default: all)")
    result = []
    for i in out_indices:
        index = _as_index(i)
        if index is None:
            raise ResnetkitValueError(f"out_indices entry {i!r} is a {type(i).__name__}, not a whole number; give level "
                                      f"numbers such as (1, 2, 3, 4) ({model_name} has levels 0..{num_levels - 1})")
        if not -num_levels <= index < num_levels:
            raise ResnetkitValueError(f"out_indices entry {i!r} is out of range for {model_name}, which has "
                                      f"{num_levels} feature levels (valid: 0..{num_levels - 1})")
        result.append(index % num_levels)
    if len(set(result)) != len(result):
        raise ResnetkitValueError(f"out_indices {tuple(out_indices)} repeats a level")
    return tuple(sorted(result))


def levels_from_trunk(trunk: Iterable[tuple[str, int, int]]) -> FeatureInfo:
    """Feature levels from ``(module, num_chs, reduction)`` in trunk order: the last module at each reduction.

    Pass only the modules that may be levels (leave out e.g. a final 1×1
    expansion conv before the head, which belongs to no level).
    """
    levels: dict[int, dict[str, Any]] = {}
    for module, num_chs, reduction in trunk:
        levels[reduction] = dict(num_chs=num_chs, reduction=reduction, module=module)  # keeps first position
    return FeatureInfo(levels.values())
