"""The base of the errors resnetkit raises on purpose, for mistakes its users can fix.

``except resnetkit.ResnetkitError`` catches every one of them (a bad table, an
unreadable checkpoint, an unknown model or dataset, a missing engine package).
The CLI prints these as one line with exit status 2; any other exception is a
bug and keeps its traceback.
"""
from __future__ import annotations

import traceback
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


class ResnetkitError(Exception):
    """A mistake the user can fix; its message names the problem and the fix."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a message for the user rather than a bug.

    True for a :class:`ResnetkitError`, a ``FileNotFoundError`` (it names the
    path), and a ``ValueError``/``TypeError``/``KeyError`` that a ``raise``
    statement in resnetkit's own code raised on purpose (argument checks
    throughout the library). A ``KeyError`` from a dictionary lookup, a
    ``TypeError`` from a wrong call or anything raised inside PyTorch is a bug.
    """
    if isinstance(exc, (ResnetkitError, FileNotFoundError)):
        return True
    if not isinstance(exc, (ValueError, TypeError, KeyError)) or exc.__traceback__ is None:
        return False
    origin = traceback.extract_tb(exc.__traceback__)[-1]  # the frame that raised it
    try:
        ours = Path(origin.filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False
    return ours and (origin.line or "").lstrip().startswith("raise ")
