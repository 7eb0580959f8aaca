"""Convolutions whose weights are reordered for oneDNN once, not on every call.

An eager ``nn.Conv2d`` on the CPU hands oneDNN a plain weight, which oneDNN
reorders into its blocked layout on *every* call: for resnet18 that is 46 MB of
copying per forward, most of the time at batch 1. :class:`PrepackedConv2d`
does the reorder at its first call (so it can use the real input size) and
keeps the result; inductor's weight freezing does the same inside
``torch.compile``. :func:`fuse_activations` then lets oneDNN apply a ReLU or
ReLU6 that follows a conv as part of the conv (a post-op), saving a pass over
the activations.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


# oneDNN post-op name -> the same activation applied separately (for the non-oneDNN path)
_ACTIVATIONS = {"none": lambda t: t, "relu": torch.relu, "hardtanh": lambda t: t.clamp(0.0, 6.0)}
_FUSABLE = {nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0])}


_MAX_PACKED_SHAPES = 4


class PrepackedConv2d(nn.Module):
    """An inference-only Conv2d (CPU) with the weight kept in oneDNN's layout after the first call.

    ``weight`` and ``bias`` stay ordinary buffers (``state_dict``, ``.to()``
    and copies see them); the packed copy is a cache, dropped by copies and
    rebuilt when the weight tensor is replaced (``.to(dtype)``), not when it is
    edited in place: the weights of an inference module are frozen. Costs a
    second copy of the conv weights in memory.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation = list(conv.stride), list(conv.padding), list(conv.dilation)
        self.groups = conv.groups
        self.register_buffer("weight", conv.weight.detach().clone())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        # packed weights by (dtype, weight storage, input shape): oneDNN picks the blocked layout for the
        # input's shape, and a weight packed for batch 8 ran mobilenet_v2 3x slower at batch 1.
        self._packed: dict[tuple, torch.Tensor] = {}
        self.post_op, self.post_args = "none", []   # a fused activation (oneDNN post-op)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if x.device.type != "cpu" or torch.is_grad_enabled() or x.dtype != w.dtype:
            out = nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return _ACTIVATIONS[self.post_op](out)
        key = (w.dtype, w.data_ptr(), tuple(x.shape))
        packed = self._packed.get(key)
        if packed is None:
            if len(self._packed) >= _MAX_PACKED_SHAPES:  # keep memory bounded: forget the oldest shape
                self._packed.pop(next(iter(self._packed)))
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.contiguous().to_mkldnn(), self.padding, self.stride,
                                                               self.dilation, self.groups, list(x.shape))
            self._packed[key] = packed
        return torch.ops.mkldnn._convolution_pointwise(x, packed, self.bias, self.padding, self.stride,
                                                       self.dilation, self.groups, self.post_op, self.post_args, "")

    def __getstate__(self) -> dict[str, Any]:  # oneDNN's opaque tensors cannot be copied or pickled
        return {**self.__dict__, "_packed": {}}

    def extra_repr(self) -> str:
        out_c, in_c, *k = self.weight.shape
        return (f"{in_c * self.groups}, {out_c}, kernel_size={tuple(k)}, stride={tuple(self.stride)}, "
                f"padding={tuple(self.padding)}, groups={self.groups}, prepacked for oneDNN"
                + (f", fused {self.post_op}{self.post_args or ''}" if self.post_op != "none" else ""))


def _packable(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            and m.weight.device.type == "cpu")


def prepack_convs(model: nn.Module) -> nn.Module:
    """Replace every plain CPU ``nn.Conv2d`` of ``model`` (in place) by a :class:`PrepackedConv2d`."""
    if not torch.backends.mkldnn.is_available():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _packable(child):
                setattr(parent, name, PrepackedConv2d(child))
    return model


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:  # its forward branches on the input
        return isinstance(m, PrepackedConv2d) or super().is_leaf_module(m, qualname)


def fuse_activations(model: nn.Module) -> nn.Module:
    """A ``torch.fx`` graph of ``model`` in which each ReLU/ReLU6 that is the only user of a
    :class:`PrepackedConv2d` runs inside that conv; ``model`` itself, with a warning naming it,
    if it cannot be traced.

    Graph-level because one activation module may run at several places (torchvision's
    blocks call ``self.relu`` after a conv *and* after the residual addition).
    Identity modules left by BatchNorm folding are dropped first.
    """
    try:
        gm = torch.fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - tracing user code can fail in any way; say so and run unfused
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"{type(model).__name__} cannot be traced by torch.fx ({type(e).__name__}: {reason}); "
                      "its convolutions stay prepacked but their activations run separately, unfused",
                      stacklevel=2)
        return model
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(modules[node.target], nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    fused = 0
    for node in list(gm.graph.nodes):
        act = modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if act is not None and node.args else None
        if type(act) not in _FUSABLE or not isinstance(source, torch.fx.Node) or len(source.users) != 1:
            continue
        conv = modules.get(source.target) if source.op == "call_module" else None
        if isinstance(conv, PrepackedConv2d) and conv.post_op == "none" and calls[source.target] == 1:
            conv.post_op, conv.post_args = _FUSABLE[type(act)]
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
            fused += 1
    if not fused:
        return model
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm
