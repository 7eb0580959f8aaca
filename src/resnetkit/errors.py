"""The base of the errors resnetkit raises on purpose, for mistakes its users can fix.

``except resnetkit.ResnetkitError`` catches every one of them (a bad table, an
unreadable checkpoint, an unknown model or dataset, a missing engine package).
The CLI prints these as one line with exit status 2; any other exception is a
bug and keeps its traceback.
"""
from __future__ import annotations


class ResnetkitError(Exception):
    """A mistake the user can fix; its message names the problem and the fix."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a message for the user rather than a bug: by type alone.

    True for a :class:`ResnetkitError` (every error resnetkit raises on purpose
    is one: :class:`ResnetkitValueError`, ``TableError``, ``EngineError``, ...)
    and a ``FileNotFoundError`` (it names the path). Anything else, a plain
    ``ValueError`` included, is a bug and keeps its traceback.
    """
    return isinstance(exc, (ResnetkitError, FileNotFoundError))


class ResnetkitValueError(ResnetkitError, ValueError):
    """A wrong value given to resnetkit: a ``ValueError`` (Python's convention) that the CLI prints as one line."""


class ResnetkitTypeError(ResnetkitError, TypeError):
    """An argument of the wrong type given to resnetkit (a ``TypeError``)."""


class ResnetkitKeyError(ResnetkitError, KeyError):
    """A name resnetkit does not know (a ``KeyError``)."""
