"""The error types that mean "bad input": the CLI prints them as one line and exits 2."""

from __future__ import annotations

import sqlite3

from harness.checkpoints.registry import CheckpointError
from harness.spec import ConfigError
from harness.data.prompts import PromptSetError
from harness.data.references import ReferenceSetError
from harness.score.embed.registry import EmbedderError
from harness.schedulers import SchedulerError
from harness.score.scoring import ScoreError
from harness.store import StoreError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, PromptSetError, CheckpointError, SchedulerError, StoreError, ValueError,
    EmbedderError, ReferenceSetError, ScoreError,
    # Unreadable or unwritable paths and a corrupt run.sqlite are the user's to fix, too.
    OSError, sqlite3.DatabaseError,
)
