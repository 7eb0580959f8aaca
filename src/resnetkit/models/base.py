"""The one model contract every family implements (timm's vocabulary + mmdet's backbone knobs).

A family subclass builds its layers and then declares three things:

* ``trunk_names``  - top-level (or dotted) module names whose sequential run is
  ``forward_features``;
* ``feature_info`` - one level per reduction, each naming a trunk module;
* ``head_names``   - the head's top-level modules in the order they run (pool,
  flatten, ..., classifier); ``classifier_name`` is the final ``nn.Linear``, inside
  the last of them.

Because the head is made of modules too, replacing ``model.avgpool`` takes effect
(as in torchvision), ``summary`` shows the pool and flatten rows, and iterating
over a model gives its top-level layers in order, so the d2l book's
``for layer in net: X = layer(X)`` loop runs the forward pass.

Everything generic then lives here, once: classifier head API, gradient
checkpointing, ``features_only`` backbones, ``frozen_stages`` and ``norm_eval``.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ResnetkitTypeError, ResnetkitValueError
from ..blocks.base import Block
from ..features import FeatureInfo, check_out_indices


class ResidualNet(nn.Module):
    trunk_names: list[str]
    head_names: list[str]
    classifier_name: str
    feature_info: FeatureInfo
    num_features: int
    num_classes: int

    def __init__(self) -> None:
        super().__init__()
        self.features_only = False
        self.out_indices: tuple[int, ...] = ()
        self.frozen_stages = -1
        self.norm_eval = False

    # ----------------------------------------------------------------- trunk
    def trunk(self) -> list[tuple[str, nn.Module]]:
        return [(n, self.get_submodule(n)) for n in self.trunk_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        for _, module in self.trunk():
            x = module(x)
        return x

    def __iter__(self) -> Iterator[nn.Module]:
        """The top-level layers in the order forward runs them: ``for layer in net: x = layer(x)`` is
        ``net(x)`` (the d2l book's shape loop)."""
        if self.features_only:
            raise ResnetkitTypeError(f"{getattr(self, 'model_name', type(self).__name__)} is a features_only backbone: it "
                                     "returns one map per level, which no loop over layers gives; iterate over .trunk()")
        names = dict.fromkeys(n.split(".")[0] for n in self.trunk_names)
        return iter([self.get_submodule(n) for n in [*names, *self.head_names]])

    # ------------------------------------------------------------------ head
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Run the head's modules in order; ``pre_logits`` stops before the classifier (pooled features)."""
        classifier = self.classifier_name.split(".")[0]
        for name in self.head_names:
            if pre_logits and name == classifier:
                break
            x = self.get_submodule(name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_levels(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """New classifier with ``num_classes`` outputs; 0 makes the model return pooled features."""
        if self.features_only:
            raise RuntimeError("a features_only backbone has no classifier to reset")
        new: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        ref = next(self.parameters(), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        parent, _, leaf = self.classifier_name.rpartition(".")
        setattr(self.get_submodule(parent) if parent else self, leaf, new)
        self.num_classes = num_classes

    # ------------------------------------------------------- checkpointing
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them."""
        for m in self.modules():
            if isinstance(m, Block):
                m.grad_checkpointing = enable

    # ------------------------------------------------------------ features
    def as_backbone(self, out_indices: Sequence[int] | None = None) -> "ResidualNet":
        """Turn this classifier into a multi-scale backbone, in place (``features_only``).

        Keeps only what the requested levels need: the head and any trunk module
        after the deepest requested level are removed, so the state dict is the
        plain backbone's (as mmdet stores it).
        """
        label = getattr(self, "model_name", type(self).__name__)
        if self.features_only:
            raise RuntimeError(f"{label} is already a features_only backbone (out_indices={self.out_indices}); "
                               "as_backbone() can only be called once")
        levels = self.feature_info
        strays = [lvl["module"] for lvl in levels if lvl["module"] not in self.trunk_names]
        if strays:  # a family bug: forward_levels would silently return fewer maps
            raise RuntimeError(f"{label}.feature_info names {strays}, which are not in trunk_names")
        self.out_indices = check_out_indices(out_indices, len(levels), label)
        self.all_levels = FeatureInfo(levels)  # every level, also those out_indices leave out
        last = levels[self.out_indices[-1]]["module"]
        keep = self.trunk_names[: self.trunk_names.index(last) + 1]
        # remembered so that load_weights ignores a full checkpoint's head instead of calling it unexpected
        self.pruned_names = self.trunk_names[len(keep):] + list(self.head_names)
        for name in self.pruned_names:
            if "." not in name and hasattr(self, name):
                delattr(self, name)
            else:  # a child of a Sequential trunk, e.g. "features.18"
                parent, _, leaf = name.rpartition(".")
                setattr(self.get_submodule(parent), leaf, nn.Identity())
        self.trunk_names = keep
        self.feature_info = levels.select(self.out_indices)
        self.features_only = True
        return self

    def forward_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = {lvl["module"] for lvl in self.feature_info}
        out = []
        for name, module in self.trunk():
            x = module(x)
            if name in wanted:
                out.append(x)
        return out

    # ------------------------------------------------- frozen stages / norm eval
    def _stage_bounds(self) -> list[str]:
        """The trunk module that ends each frozen_stages stage: a family's ``stage_ends`` (ResNets:
        stem, layer1, ...), else its feature levels (stage 0 = up to C1, the stem)."""
        levels = getattr(self, "all_levels", self.feature_info)
        return getattr(self, "stage_ends", None) or [lvl["module"] for lvl in levels]

    def _stage_modules(self, stage: int) -> list[nn.Module]:
        """Stage 0 = trunk up to the first bound; stage k = after bound k-1 up to bound k."""
        names = list(self.trunk_names)  # a features_only backbone may have pruned later stages
        bounds = [names.index(b) if b in names else len(names) for b in self._stage_bounds()]
        start = 0 if stage == 0 else bounds[stage - 1] + 1
        return [self.get_submodule(n) for n in names[start: bounds[stage] + 1]]

    def freeze_stages(self, frozen_stages: int) -> None:
        """Stages 0..frozen_stages lose ``requires_grad`` and stay in eval mode (mmdet's meaning)."""
        num_stages = len(self._stage_bounds())
        if frozen_stages >= num_stages:
            raise ResnetkitValueError(f"frozen_stages={frozen_stages} but {type(self).__name__} has stages "
                                      f"0..{num_stages - 1} (0 = stem)")
        self.frozen_stages = frozen_stages
        for stage in range(frozen_stages + 1):
            for m in self._stage_modules(stage):
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True) -> "ResidualNet":
        super().train(mode)
        if mode:
            for stage in range(self.frozen_stages + 1):
                for m in self._stage_modules(stage):
                    m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, _BatchNorm):
                        m.eval()
        return self

    def _apply_backbone_options(self, frozen_stages: int = -1, norm_eval: bool = False, with_cp: bool = False) -> None:
        """Shared tail of every family constructor."""
        self.norm_eval = norm_eval
        if with_cp:
            self.set_grad_checkpointing(True)
        if frozen_stages >= 0:
            self.freeze_stages(frozen_stages)
        self.train(self.training)
