"""The local executor: one process works through a work list, cell by cell, in batches.

It keeps the loaded pipeline across cells that share it, swaps schedulers with from_config,
reuses prompt conditioning, and hands every finished sample (or its failure) to the sample
writer thread, which stores it while the next batch generates.
A failing batch is retried one sample at a time so one bad sample never takes its neighbours
down; a cell whose pipeline or scheduler cannot be set up is reported and left for a resume.
"""

from __future__ import annotations

import itertools
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from harness.stages import TOTAL
from harness.audio_checks import audio_flags
from harness.measure.trackers import StageTimer
from harness.plan import Batch, WorkItem
from harness.generate.conditioning import ConditioningCache, ConditioningKey, stack
from harness.generate.sampling import generate_to_host
from harness.generate.writer import SampleWriter, close_quietly
from harness.generate.load import LoadedPipeline, PipelineCache
from harness.store import RunStore, SampleRecord


@dataclass
class ExecutionReport:
    """What one executor call did."""

    done: int = 0
    failed: int = 0
    cell_errors: dict[str, str] = field(default_factory=dict)  # cell id -> setup error
    call_seconds: float = 0.0  # summed wall time of the pipeline calls (for the duty cycle)
    setup_seconds: float = 0.0  # per-cell set-up: pipeline loading and release, scheduler swap


class LocalExecutor:
    """Runs work items in this process and writes results to ``store``."""

    def __init__(self, store: RunStore, batch_size: int = 1, conditioning_cache: bool = True,
                 allow_unsafe_schedulers: bool = False, on_sample: Callable[[WorkItem], None] | None = None,
                 async_writes: bool = True):
        self.store = store
        self.async_writes = async_writes
        self.batch_size = batch_size
        self.allow_unsafe = allow_unsafe_schedulers
        self.pipelines = PipelineCache()
        self.conditioning = ConditioningCache(enabled=conditioning_cache)
        self.on_sample = on_sample or (lambda item: None)

    def run(self, batches: list[Batch]) -> ExecutionReport:
        """Process all batches (cells in order) and return counts."""
        report = ExecutionReport()
        self.writer = SampleWriter(threaded=self.async_writes)
        try:
            self._run_cells(batches, report)
        except BaseException:
            close_quietly(self.writer)  # keep what finished; the original error is what matters
            raise
        self.writer.close()
        return report

    def _run_cells(self, batches: list[Batch], report: ExecutionReport) -> None:
        for cell_id, group in itertools.groupby(batches, key=lambda b: b.cell.id):
            group = list(group)
            try:
                start = time.perf_counter()
                loaded = self.pipelines.for_cell(group[0].cell, self.allow_unsafe)
                report.setup_seconds += time.perf_counter() - start
            except Exception as err:  # noqa: BLE001 - reported per cell, the sweep goes on
                report.cell_errors[cell_id] = f"{type(err).__name__}: {err}"
                for batch in group:
                    for item, todo in zip(batch.items, batch.todo):
                        if todo:
                            self.on_sample(item)
                continue
            for batch in group:
                self._run_batch(loaded, list(batch.items), list(batch.todo), report)
            del loaded  # so the next cell's load can free this pipeline first

    def _run_batch(self, loaded: LoadedPipeline, batch: list[WorkItem], todo: list[bool],
                   report: ExecutionReport) -> None:
        rate = loaded.pipe.vocoder.config.sampling_rate
        try:
            audio, timer, cached = self._generate(loaded, batch)
        except Exception as err:  # noqa: BLE001 - isolate the failing sample(s)
            _free_cuda_cache()
            if len(batch) > 1:
                for item, needed in zip(batch, todo):
                    if needed:
                        self._run_batch(loaded, [item], [True], report)
                return
            failed, error = batch[0], _describe_error(err)
            self.writer.submit(lambda: self._store(rate, failed, None, {}, None, error, report))
            return

        def store_batch() -> None:  # on the writer thread: waits for the audio, then stores it
            timings = {**timer.results(), "denoise_steps": batch[0].cell.steps}
            report.call_seconds += timings[TOTAL]
            waveforms = audio.numpy()
            for row, (item, needed) in enumerate(zip(batch, todo)):
                if needed:
                    self._store(rate, item, waveforms[row], timings, cached[row], None, report, len(batch))

        self.writer.submit(store_batch)

    def _generate(self, loaded: LoadedPipeline, batch: list[WorkItem]):
        cell, pipe = batch[0].cell, loaded.pipe
        timer = StageTimer(cell.device)
        guided = cell.guidance_scale > 1.0
        conds, cached = [], []
        with timer.stage(TOTAL):
            for item in batch:
                key = ConditioningKey(item.prompt.text, item.prompt.transcription if loaded.info.needs_transcription
                                      else None, cell.negative_prompt, guided, cell.max_new_tokens)
                with loaded.call_context():
                    cond, was_cached = self.conditioning.get(pipe, key, timer)
                conds.append(cond)
                cached.append(was_cached)
            with loaded.call_context():
                audio = generate_to_host(pipe, stack(conds, guided), [i.seed for i in batch], cell.steps,
                                         cell.guidance_scale, cell.audio_length_s, timer)
        return audio, timer, cached

    def _store(self, sample_rate: int, item: WorkItem, audio: np.ndarray | None,
               timings: dict, cached: bool | None, error: str | None, report: ExecutionReport,
               batch_size: int = 1) -> None:
        flags = audio_flags(audio) if audio is not None else []
        if "nan_inf" in flags:
            error, audio = "output contains NaN or Inf values", None
        record = SampleRecord(
            cell_id=item.cell.id, prompt_id=item.prompt.id, prompt=item.prompt.text,
            transcription=item.prompt.transcription, seed=item.seed,
            status="failed" if error else "ok", error=error, flags=flags, timings=timings,
            batch_size=batch_size, conditioning_cached=cached,
        )
        self.store.write_sample(record, audio, sample_rate)
        report.failed += bool(error)
        report.done += not error
        self.on_sample(item)


def _describe_error(err: BaseException) -> str:
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    location = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {err}{location}"


def _free_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
