"""Output-size arithmetic of convolutions and pools, with the worked formula as text.

One implementation serves ``explain`` (which prints the derivation of every
layer) and the layer-table parser (which checks declared sizes and names the
formula in its error). Sizes are per spatial axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MINUS = "\u2212"  # the typographic minus reads better in formulas than '-'


@dataclass(frozen=True)
class SizeStep:
    """One axis of one layer: the resulting size and how it was derived."""

    size: int
    formula: str  # e.g. "(224 − 7 + 2·3) // 2 + 1 = 112"


def window_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
               ceil_mode: bool = False) -> SizeStep:
    """Output size of a sliding window (conv, max/avg pool) along one axis, as PyTorch computes it.

    ``(H + 2p − d·(k−1) − 1) // s + 1``; with ``d = 1`` this is written the way
    textbooks do, ``(H − k + 2p) // s + 1``. With ``ceil_mode`` the division
    rounds up, but PyTorch drops a last window that would start in the right
    padding, and the text says so when it happens.
    """
    span = dilation * (kernel - 1) + 1
    num = size + 2 * padding - span
    if dilation == 1:
        inner = f"{size} {MINUS} {kernel} + 2·{padding}"
    else:
        inner = f"{size} + 2·{padding} {MINUS} {dilation}·({kernel} {MINUS} 1) {MINUS} 1"
    if num < 0 and not ceil_mode:  # (ceil mode may still fit one window that starts inside the input)
        out = num // stride + 1  # may be <= 0: the caller reports it
        return SizeStep(out, f"({inner}) // {stride} + 1 = {out}")
    if not ceil_mode:
        out = num // stride + 1
        return SizeStep(out, f"({inner}) // {stride} + 1 = {out}")
    out = math.ceil(num / stride) + 1
    text = f"ceil(({inner}) / {stride}) + 1"
    if (out - 1) * stride >= size + padding:
        # PyTorch: "ensure that the last pooling starts inside the image"
        out -= 1
        return SizeStep(out, f"{text} {MINUS} 1 = {out} (the last window would start in the padding)")
    return SizeStep(out, f"{text} = {out}")


def transposed_out(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                   output_padding: int = 0) -> SizeStep:
    """Output size of a transposed convolution along one axis: ``(H−1)·s − 2p + d·(k−1) + op + 1``."""
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    return SizeStep(out, f"({size} {MINUS} 1)·{stride} {MINUS} 2·{padding} + {dilation}·({kernel} {MINUS} 1) + "
                         f"{output_padding} + 1 = {out}")
