"""The sample writer: one thread that stores finished samples while the next batch generates.

Generation hands each finished batch's jobs (resolve the audio, flag it, write the WAV with
fsync, hash it, commit the row) to this thread through a bounded queue, so disk and SQLite
work never idles the accelerator. Jobs run in the order they were submitted, one at a time.
The crash contract is the store's: a row is committed only after its file is complete, so a
SIGKILL loses at most the jobs still queued, and a resume redoes exactly those.

A failing job (disk full, read-only folder) stops the writer: every later ``submit`` and
``close`` raises ``WriterError`` naming the first failure; what was committed before stays.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

from harness.errors import HarnessError

_STOP = object()


class WriterError(HarnessError, OSError):
    """Storing a sample failed; the sweep stops, every sample committed before is kept."""


class SampleWriter:
    """Runs store jobs on one background thread (``threaded=False``: inline, for comparison)."""

    def __init__(self, threaded: bool = True, max_pending: int = 64) -> None:
        self.threaded = threaded
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name="sample-writer", daemon=True) if threaded else None
        if self._thread:
            self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` (blocks while ``max_pending`` jobs wait); raises if an earlier job failed."""
        self._raise_if_failed()
        if not self.threaded:
            self._run(job)
            self._raise_if_failed()
            return
        self._queue.put(job)

    def close(self) -> None:
        """Wait for every queued job; raise ``WriterError`` if any failed."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is None:  # after a failure, drain without writing: the sweep is stopping
                self._run(job)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as err:  # noqa: BLE001 - handed to the generating thread
            self._error = err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            err = self._error
            raise WriterError(f"storing samples failed ({type(err).__name__}: {err}); every sample "
                              "committed before this is kept: fix the cause and run again to resume") from err


def close_quietly(writer: SampleWriter) -> None:
    """Wait for the writer's queued jobs, ignoring its error (another error is being raised)."""
    try:
        writer.close()
    except WriterError:
        pass
