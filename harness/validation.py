"""Checks shared by every reader of user files (sweeps, policies, baselines, benchmark JSON).

Parsed TOML and JSON are plain trees of dicts, lists and scalars. Before a tree reaches a
pydantic model it is walked once, without recursion, for what pydantic cannot see or would
crash on: nesting deeper than any real file needs (a 100,000-deep array is a RecursionError
further on), integers outside SQLite's signed 64-bit range (stored later, they overflow only
after the run folder exists) and NaN or infinite floats (NaN stored as NULL breaks NOT NULL).
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_DEPTH = 32
"""Deepest nesting of tables and arrays a user file may have (real files need 5 or fewer)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""SQLite's INTEGER range: every integer of a sweep may end up in the store."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def tree_problem(tree: Any, *, finite: bool = True, max_depth: int = MAX_DEPTH) -> str | None:
    """The first problem of a parsed TOML/JSON tree, as 'key.path: what', or None when it is usable.

    Problems: nesting deeper than ``max_depth``, an integer outside int64, and (``finite``) a
    NaN or infinite float.
    """
    stack: list[tuple[Any, tuple, int]] = [(tree, (), 0)]
    while stack:
        node, loc, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= max_depth:
                return f"{_where(loc)}nested deeper than {max_depth} levels of tables/arrays"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, (*loc, k), depth + 1) for k, v in reversed(list(items)))
        elif isinstance(node, bool):
            continue
        elif isinstance(node, int) and not INT64_MIN <= node <= INT64_MAX:
            return f"{_where(loc)}integer {_short(node)} is outside the 64-bit range [-2**63, 2**63 - 1]"
        elif finite and isinstance(node, float) and not math.isfinite(node):
            return f"{_where(loc)}{node} is not a finite number"
    return None


def _where(loc: tuple) -> str:
    return f"{format_loc(loc)}: " if loc else ""


def _short(value: int) -> str:
    # str() of a huge int is slow, and refused past 4300 digits: give its size instead.
    return str(value) if value.bit_length() <= 100 else f"of {value.bit_length()} bits"


def format_loc(loc: tuple | list) -> str:
    """A pydantic-style location as 'a.b[0].c'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return one_line(out)


def one_line(text: str, limit: int = 500) -> str:
    """``text`` with control characters escaped and cut to ``limit`` characters: fit for one error line."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_error(err: Any) -> str:
    """A pydantic ``ValidationError`` as one line: where, what, and the offending value."""
    e = err.errors()[0]
    msg = re.sub(r"^Value error, ", "", e["msg"])
    msg = re.sub(r"valid dictionary or instance of \w+", "table (an object in JSON)", msg)  # no internal names
    loc = format_loc(e["loc"])
    if e["type"] == "missing":
        return f"missing required key {loc!r}"
    if e["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    got = "" if e["type"].startswith("value_error") else f" (got {_short_repr(e.get('input'))})"
    return one_line(f"{loc}: {msg}{got}" if loc else f"{msg}{got}")


def _short_repr(value: Any) -> str:
    text = _short(value) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
