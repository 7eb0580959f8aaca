"""The one error a layer table can raise."""
from __future__ import annotations

from ..errors import ResnetkitError


class TableError(ResnetkitError, ValueError):
    """A layer table that cannot be built: names the row (data rows count from 1) and what to fix.

    Size mismatches also carry ``declared`` and ``computed`` (``H×W×C`` text)
    and the ``formula`` that gave the computed size.
    """

    def __init__(self, message: str, row: int | None = None, declared: str | None = None,
                 computed: str | None = None, formula: str | None = None) -> None:
        prefix = f"row {row}: " if row is not None else ""
        super().__init__(prefix + message)
        self.row = row
        self.declared = declared
        self.computed = computed
        self.formula = formula
