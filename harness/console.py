"""The rich console every command prints tables with."""

from __future__ import annotations

from rich.console import Console


def make_console() -> Console:
    """A console that is 200 columns wide when piped (CI logs, files) instead of rich's 80."""
    return Console(width=None if Console().is_terminal else 200)
