"""``load_weights``: put a checkpoint from torchvision, timm, mmdet or resnetkit into a model."""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .io import WeightsError, find_state_dict, read_state_dict, unwrap_model
from .layouts import align_shortcut_slots, apply_layout, detect_layout, split_container, strip_wrappers

logger = logging.getLogger("resnetkit.weights")


@dataclass
class LoadResult:
    """What :func:`load_weights` did, in ``load_state_dict``'s vocabulary.

    ``missing_keys``: model tensors the checkpoint did not provide (left as they
    were). ``unexpected_keys``: checkpoint tensors the model has no place for.
    ``mismatched_keys``: same name, other shape (left out). ``ignored_keys``:
    checkpoint tensors left out on purpose (a classifier of another size,
    detector necks and heads, modules a ``features_only`` backbone dropped).
    ``layout``: the other library's layout that was translated, if any.
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    mismatched_keys: list[str] = field(default_factory=list)
    ignored_keys: list[str] = field(default_factory=list)
    layout: str | None = None


def _classifier_name(model: nn.Module) -> str | None:
    """The final Linear's path: ``classifier_name`` on our models, else the last ``nn.Linear``."""
    name = getattr(model, "classifier_name", None)
    if name:
        return name
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _stem_kind(shapes: Mapping[str, torch.Size]) -> str | None:
    """ResNet stems: torchvision's 7×7 conv or the deep stem (timm ``conv1.N`` / mmdet ``stem.N``)."""
    if "conv1.0.weight" in shapes or "stem.0.weight" in shapes:
        return "deep stem (three 3×3 convs)"
    w = shapes.get("conv1.weight")
    if w is not None and len(w) == 4 and w[-1] == 7:
        return "7×7 stem"
    return None


def _short(keys: list[str], limit: int = 8) -> str:
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _translate(state: Mapping[str, torch.Tensor], model_keys: set[str],
               classifier: str | None) -> tuple[dict[str, str], list[str], str | None]:
    """``({checkpoint key: model key}, ignored checkpoint keys, layout name)``."""
    names = {k: strip_wrappers(k) for k in state}
    container, dropped = split_container(names.values(), model_keys, classifier)
    dropped_set = set(dropped)
    ignored = [k for k, v in names.items() if v in dropped_set]
    names = {k: container[v] for k, v in names.items() if v not in dropped_set}
    layout = detect_layout(names.values(), model_keys)
    if layout is not None:
        renamed = apply_layout(layout, names.values(), classifier)
        names = {k: renamed[v] for k, v in names.items()}
    names = align_shortcut_slots(names, model_keys)
    seen: dict[str, str] = {}
    for k, v in names.items():
        if v in seen:
            raise WeightsError(f"checkpoint keys {seen[v]!r} and {k!r} both map to {v!r}; "
                               "the file mixes two copies of the model (e.g. a model and its EMA)")
        seen[v] = k
    return names, ignored, layout.name if layout else None


def load_weights(model: nn.Module, path: str | os.PathLike | Mapping[str, torch.Tensor],
                 strict: bool = True) -> LoadResult:
    """Load a checkpoint into ``model`` in place, translating other libraries' key names.

    ``path`` is a ``.pth``/``.pt`` file (read with ``weights_only=True``), a
    ``.safetensors`` file, or an already loaded dict. The tensors may sit under
    ``state_dict``/``model``/... (mmcv, timm, resnetkit's ``last.pt``), carry
    ``module.``/``_orig_mod.``/``backbone.`` prefixes, or use mmdet's and timm's
    names (see :mod:`resnetkit.weights.layouts`). A classifier of another size
    is left out with a warning. With ``strict=True`` any missing, unexpected or
    mis-shaped tensor raises :class:`WeightsError` before the model is touched;
    with ``strict=False`` what fits is loaded and the rest is logged and returned.
    """
    label = "the given state dict" if isinstance(path, Mapping) else str(path)
    state = find_state_dict(path, label) if isinstance(path, Mapping) else read_state_dict(path)
    target = unwrap_model(model)
    model_state = target.state_dict()
    model_keys = set(model_state)
    classifier = _classifier_name(target)
    model_label = getattr(target, "model_name", None) or type(target).__name__

    names, ignored, layout = _translate(state, model_keys, classifier)
    mapped = {new: state[old] for old, new in names.items()}
    stem_msg = _stem_mismatch(label, model_label, mapped, model_state)
    if stem_msg and strict:
        raise WeightsError(stem_msg)

    skip = _pruned_keys(target, mapped, model_keys)
    kept_own = _foreign_classifier(label, model_label, classifier, mapped, model_state, skip)
    ignored += [old for old, new in names.items() if new in skip]
    mapped = {k: v for k, v in mapped.items() if k not in skip}

    unexpected = [k for k in mapped if k not in model_keys]
    mismatched = [k for k in mapped if k in model_keys and mapped[k].shape != model_state[k].shape]
    # BatchNorm fills a missing num_batches_tracked itself (old torchvision files have none).
    missing = [k for k in model_state if k not in mapped and k not in kept_own
               and not k.endswith("num_batches_tracked")]
    result = LoadResult(missing, unexpected, mismatched, ignored, layout)

    if strict and (missing or unexpected or mismatched):
        raise WeightsError(_strict_message(label, model_label, result, model_state, mapped, classifier))

    target.load_state_dict({k: v for k, v in mapped.items() if k in model_keys and k not in mismatched},
                           strict=False)
    if stem_msg:
        warnings.warn(stem_msg, UserWarning, stacklevel=2)
    _log(label, model_label, result)
    return result


def _stem_mismatch(label: str, model_label: str, mapped: Mapping[str, torch.Tensor],
                   model_state: Mapping[str, torch.Tensor]) -> str | None:
    """A 7×7 checkpoint in a deep-stem model (or the reverse) is one fact, not a wall of mismatches."""
    ck_stem = _stem_kind({k: v.shape for k, v in mapped.items()})
    model_stem = _stem_kind({k: v.shape for k, v in model_state.items()})
    if not (ck_stem and model_stem and ck_stem != model_stem):
        return None
    return (f"{label} is a checkpoint for a ResNet with a {ck_stem}, but {model_label} has a {model_stem}; "
            f"build the model with deep_stem={ck_stem.startswith('deep')} to match the checkpoint")


def _pruned_keys(target: nn.Module, mapped: Mapping[str, torch.Tensor], model_keys: set[str]) -> set[str]:
    """Checkpoint keys of modules that features_only removed (head, trunk after the last level):
    left out on purpose, not "unexpected"."""
    pruned = tuple(n + "." for n in getattr(target, "pruned_names", ()))
    return {k for k in mapped if k not in model_keys and pruned and k.startswith(pruned)}


def _foreign_classifier(label: str, model_label: str, classifier: str | None, mapped: Mapping[str, torch.Tensor],
                        model_state: Mapping[str, torch.Tensor], skip: set[str]) -> set[str]:
    """Add a classifier of another size (or one the model lacks) to ``skip``, warning about the former;
    returns the model's classifier keys that keep their own initialisation."""
    w_key = f"{classifier}.weight"
    if not classifier or w_key not in mapped:
        return set()
    cls_keys = [k for k in (w_key, f"{classifier}.bias") if k in mapped]
    if w_key not in model_state:
        skip.update(cls_keys)
        return set()
    if mapped[w_key].shape == model_state[w_key].shape:
        return set()
    skip.update(cls_keys)
    theirs, ours = tuple(mapped[w_key].shape), tuple(model_state[w_key].shape)
    what = (f"has {theirs[0]} outputs but {model_label}'s has {ours[0]}" if theirs[1:] == ours[1:]
            else f"is {theirs} but {model_label}'s is {ours}")
    warnings.warn(f"{label}: its classifier '{classifier}' {what}; left out, the model keeps its own "
                  "freshly initialised classifier", UserWarning, stacklevel=3)
    return {k for k in cls_keys if k in model_state}


def _log(label: str, model_label: str, r: LoadResult) -> None:
    if r.layout:
        logger.info("%s -> %s: read as the %s layout", label, model_label, r.layout)
    for what, keys in (("missing", r.missing_keys), ("unexpected", r.unexpected_keys),
                       ("shape-mismatched (left out)", r.mismatched_keys)):
        if keys:
            logger.warning("%s -> %s: %d %s keys: %s", label, model_label, len(keys), what, _short(keys))
    if r.ignored_keys:
        logger.info("%s -> %s: %d keys ignored on purpose: %s", label, model_label, len(r.ignored_keys),
                    _short(r.ignored_keys))


def _strict_message(label: str, model_label: str, r: LoadResult, model_state: Mapping[str, torch.Tensor],
                    mapped: Mapping[str, torch.Tensor], classifier: str | None) -> str:
    parts = [f"{label} does not fit {model_label}"
             + (f" (after translating the {r.layout} layout)" if r.layout else "") + ":"]
    if r.missing_keys:
        parts.append(f"{len(r.missing_keys)} missing keys: {_short(r.missing_keys)}")
    if r.unexpected_keys:
        parts.append(f"{len(r.unexpected_keys)} unexpected keys: {_short(r.unexpected_keys)}")
    if r.mismatched_keys:
        shapes = [f"{k} {tuple(mapped[k].shape)} vs model {tuple(model_state[k].shape)}" for k in r.mismatched_keys]
        parts.append(f"{len(shapes)} shape mismatches: {_short(shapes, 5)}")
    if classifier and r.missing_keys and all(k.startswith(classifier + ".") for k in r.missing_keys):
        parts.append("the checkpoint has no classifier (a backbone checkpoint): build the model with "
                     "features_only=True or num_classes=0, or load with strict=False")
    else:
        parts.append("pass strict=False to load what fits and get the lists back")
    return "\n  ".join(parts)
