"""Networks as layer tables: ``from_table`` builds one, ``to_table`` writes any model as one."""
from .build import TableGhost, TableNet, TableResidual, from_table
from .errors import TableError
from .parse import parse_table
from .render import to_table

__all__ = ["from_table", "to_table", "TableError", "TableNet", "TableResidual", "TableGhost", "parse_table"]
