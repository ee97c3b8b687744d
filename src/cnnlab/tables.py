"""The one CSV writer: every CSV cnnlab writes (predictions, per-class tables, history, skipped.csv).

Cells come from class names, file names and reasons that a dataset's folders or CSV chose. A cell a
spreadsheet would run as a formula (starting with = + - @, a tab or a carriage return) gets a
leading apostrophe, OWASP's "CSV injection" advice; numbers, negative ones included, stay numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Sequence

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: Any) -> Any:
    """`cell`, with a leading apostrophe when it is text a spreadsheet would evaluate."""
    if not isinstance(cell, str) or not cell.startswith(FORMULA_START):
        return cell
    try:
        float(cell)  # "-0.5" is a number to a spreadsheet too, not a formula
        return cell
    except ValueError:
        return "'" + cell


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """`rows` under `header` as CSV at `path` (quoted where needed, formulas escaped); returns `path`."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")  # LF, as the files it replaced (git diffs stay clean)
        writer.writerow([spreadsheet_safe(cell) for cell in header])
        writer.writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return Path(path)
