"""Model registry: ``register_model``, ``list_models``, ``create_model``."""
from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from .errors import ResnetkitError, ResnetkitTypeError, ResnetkitValueError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    cls: type | None                      # the class whose keyword arguments the fn forwards
    input_size: tuple[int, int, int] = (3, 224, 224)   # (C, H, W) the model is designed for

    def accepted_kwargs(self) -> set[str]:
        names = {p for p in inspect.signature(self.fn).parameters if p != "kwargs"}
        for klass in self.cls.__mro__ if self.cls is not None else ():
            if "__init__" not in vars(klass):
                continue
            params = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break  # a subclass forwarding **kwargs also accepts its base class's arguments
        return names


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(cls: type | None = None, input_size: tuple[int, int, int] = (3, 224, 224)) -> Callable:
    """Decorator: ``@register_model(ResNet)`` on ``def resnet50(**kwargs)``.

    ``cls`` is the class the function forwards ``**kwargs`` to; its signature is
    what ``create_model`` checks keyword arguments against, so a typo such as
    ``deep_sten=True`` fails loudly instead of being ignored. ``input_size`` is the
    (C, H, W) the model is designed for (CIFAR models: 3×32×32); it becomes the
    model's ``default_input_size`` used by summaries, benchmarks and tests.
    """
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ResnetkitValueError(f"model {fn.__name__!r} is already registered")
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, cls, tuple(input_size))
        return fn
    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered with an fnmatch pattern (``"resnet*"``)."""
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} See resnetkit.list_models() for all "
                                f"{len(_REGISTRY)} names.")
    return _REGISTRY[name]


def _pretrained_path(name: str, pretrained: Any, kwargs: dict[str, Any]) -> str | os.PathLike | None:
    """``pretrained`` as a path or None; torchvision's ``pretrained=True`` and ``weights=`` get a one-line
    answer saying which local file to pass (nothing is ever downloaded)."""
    from .weights.sources import pretrained_error

    weights = kwargs.pop("weights", None)
    if weights is not None:
        tag = str(getattr(weights, "name", weights))  # a torchvision enum member or its string
        raise ResnetkitValueError(pretrained_error(name, f"weights={tag!r}", tag))
    if pretrained is True:
        raise ResnetkitValueError(pretrained_error(name, "pretrained=True"))
    if pretrained is None or pretrained is False or pretrained == "":
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ResnetkitTypeError(pretrained_error(name, f"pretrained=<{type(pretrained).__name__}>"))
    return pretrained


class UnknownModelError(ResnetkitError, ValueError, KeyError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0])


def create_model(name: str, num_classes: int | None = None, in_chans: int | None = None,
                 pretrained: str | None = None, features_only: bool = False,
                 out_indices: tuple[int, ...] | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    ``num_classes``/``in_chans`` default to the model's own (1000/3; 10 classes
    for CIFAR and d2l models, 1 channel for ``d2l_resnet18``). ``pretrained`` is a
    local checkpoint path loaded with :func:`resnetkit.load_weights` (never a
    download; ``pretrained=True`` and torchvision's ``weights=`` say which file to get).
    ``features_only=True`` returns a multi-scale backbone whose forward
    gives one tensor per ``out_indices`` level.
    """
    entry = get_entry(name)
    pretrained = _pretrained_path(name, pretrained, kwargs)
    accepted = entry.accepted_kwargs()
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(k, sorted(accepted), n=3)
            msgs.append(f"{k!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ResnetkitTypeError(f"create_model({name!r}): unknown keyword argument(s) {', '.join(msgs)}. "
                                 f"Accepted: {', '.join(sorted(accepted - {'block', 'layers'}))}")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if in_chans is not None:
        kwargs["in_chans"] = in_chans
    try:
        model = entry.fn(**kwargs)
    except TypeError as e:  # e.g. groups= for a ResNeXt, whose constructor fixes it
        fixed = re.search(r"got multiple values for (?:keyword )?argument '(\w+)'", str(e))
        if not fixed:
            raise
        cls_name = (entry.cls or entry.fn).__name__
        raise ResnetkitTypeError(f"create_model({name!r}): {fixed.group(1)!r} is fixed by the {name} architecture and "
                                 f"cannot be passed; build the class ({cls_name}) yourself to change it") from None
    model.model_name = name
    chans = in_chans if in_chans is not None else entry.input_size[0]
    model.default_input_size = (chans, *entry.input_size[1:])
    if features_only:
        model.as_backbone(out_indices)
    elif out_indices is not None:
        raise ResnetkitValueError("out_indices only applies with features_only=True")
    if pretrained:  # after as_backbone, so a backbone-only checkpoint (mmdet) fits strictly
        from .weights import load_weights
        load_weights(model, pretrained)
    return model
