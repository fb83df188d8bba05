"""``HarnessError``: the base of every user-facing error. The CLI prints one line and exits 2.

This module imports nothing from the stages, so catching user errors costs no imports: each
stage's error (``ConfigError``, ``StoreError``, ``ScoreError``, ...) subclasses ``HarnessError``.
"""

from __future__ import annotations

import sqlite3


class HarnessError(Exception):
    """Bad input or a state the user must fix; the message says what is wrong and what to do."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    HarnessError, ValueError,
    # Unreadable or unwritable paths and a corrupt run.sqlite are the user's to fix, too.
    OSError, sqlite3.DatabaseError,
)
