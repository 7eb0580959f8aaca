"""Optional dependencies of training: imported on first use so ``import resnetkit`` stays light."""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ResnetkitError


class MissingExtraError(ResnetkitError, ImportError):
    """A package of the ``train`` extra is not installed; the message says what to install."""


def require(module: str, extra: str = "train", purpose: str = "training") -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` with a one-line install hint.

    ``module`` may be dotted (``matplotlib.pyplot``); the hint names the top-level
    distribution and the resnetkit extra that brings it, e.g.
    ``pip install 'resnetkit[train]'``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        top = {"PIL": "pillow"}.get(top, top)
        raise MissingExtraError(f"{purpose} needs {top}, which is not installed: "
                                f"pip install 'resnetkit[{extra}]'") from e
