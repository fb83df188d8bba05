"""The rich console every command prints tables with, and the table cells of a metric row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def make_console() -> Console:
    """A console that is 200 columns wide when piped (CI logs, files) instead of rich's 80."""
    return Console(width=None if Console().is_terminal else 200)


def value_and_ci(row: dict[str, Any]) -> tuple[str, str]:
    """A metric row's value and confidence interval as table cells ("-" where there is none)."""
    value = "-" if row["value"] is None else f"{row['value']:.4g}"
    ci = "-" if row["ci_low"] is None else f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]"
    return value, ci


def metric_table(title: str, columns: Sequence[str], rows: Iterable[dict[str, Any]],
                 cells: Callable[[dict[str, Any], str, str], Sequence[str]]) -> Table:
    """A table of metric rows; ``cells(row, value, ci)`` gives a row's cells, value and CI formatted."""
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*cells(row, *value_and_ci(row)))
    return table
