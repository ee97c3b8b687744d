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
        # LF line ends, as the files it replaced (git diffs stay clean). With LF, csv quotes a cell holding a
        # lone CR only when told to: such rows go through a writer that quotes every cell
        minimal = csv.writer(handle, lineterminator="\n")
        quote_all = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for row in [header, *rows]:
            cells = [spreadsheet_safe(cell) for cell in row]
            (quote_all if any(isinstance(cell, str) and "\r" in cell for cell in cells) else minimal).writerow(cells)
    return Path(path)
