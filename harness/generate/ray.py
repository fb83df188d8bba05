"""The Ray executor: ``run --executor ray [--address ADDR] [--workers N]``.

One long-lived actor per whole GPU (on a cluster without GPUs: ``--workers`` CPU actors, one CPU
each) keeps its loaded pipelines and its conditioning cache across every batch it is given.
The driver keeps a queue of batches and hands the next one to whichever actor finishes first, so
fast and slow workers both stay busy. Actors only compute: they return each batch's audio and
sample records, and the driver alone writes the run folder (one writer thread, the store's usual
atomic file-then-row writes, while the driver waits for the next batch), so a finished sample is
never written twice.

A batch whose actor dies (killed, OOM-killed, node lost) is given to another actor (a new one
replaces the dead one) up to ``max_attempts`` times; after that its samples are stored as failed
with the error, and ``--retry-failed`` redoes them. Nothing of that batch had been written, and
the batch is recomputed whole, so its audio is the same as a single-process run's.

Ray is an optional extra: ``pip install 'audioldm2-harness[ray]'``.
"""

from __future__ import annotations

import os
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any, Callable

from harness.generate.local import ExecutionReport, LocalExecutor
from harness.generate.writer import SampleWriter, close_quietly
from harness.plan import Batch, WorkItem
from harness.store import RunStore, SampleRecord

INSTALL_HINT = "pip install 'audioldm2-harness[ray]'"
# Environment variables a local cluster's workers must see as the driver does.
_PASS_ENV = ("AUDIOLDM2_HARNESS_CACHE", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
             "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "CUBLAS_WORKSPACE_CONFIG")


def import_ray():
    """Import ray, or fail with the install command."""
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class _Collector:
    """Stands in for the store inside an actor: keeps what would have been written."""

    def __init__(self) -> None:
        self.results: list[tuple[SampleRecord, Any, int]] = []

    def write_sample(self, record: SampleRecord, audio, sample_rate: int) -> None:
        self.results.append((record, audio, sample_rate))


class BatchWorker:
    """The actor body: a LocalExecutor whose store is a collector; pipelines and cache persist."""

    def __init__(self, conditioning_cache: bool, allow_unsafe: bool, threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.collector = _Collector()
        self.executor = LocalExecutor(self.collector, 1, conditioning_cache, allow_unsafe)  # type: ignore[arg-type]

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: Batch) -> tuple[list[tuple[SampleRecord, Any, int]], dict[str, str], float, float]:
        """Generate one batch; return (record, audio, sample rate) per todo sample, cell errors, and
        the seconds spent in pipeline calls and in cell set-up (for the run's duty cycle)."""
        self.collector.results = []
        report = self.executor.run([batch])
        return self.collector.results, report.cell_errors, report.call_seconds, report.setup_seconds


class RayExecutor:
    """Runs batches on Ray actors; the calling process writes every result to ``store``."""

    def __init__(self, store: RunStore, batch_size: int = 1, conditioning_cache: bool = True,
                 allow_unsafe_schedulers: bool = False, on_sample: Callable[[WorkItem], None] | None = None,
                 address: str | None = None, workers: int | None = None, max_attempts: int = 3,
                 on_dispatch: Callable[[Any, Batch], None] | None = None, threads: int | None = None) -> None:
        self.ray = import_ray()
        self.store = store
        self.batch_size = batch_size
        self.conditioning_cache = conditioning_cache
        self.allow_unsafe = allow_unsafe_schedulers
        self.on_sample = on_sample or (lambda item: None)
        self.address = address
        self.workers = workers
        self.max_attempts = max_attempts
        self.on_dispatch = on_dispatch or (lambda actor, batch: None)
        self.threads = threads  # torch threads per CPU actor, each reserving as many CPUs (default 1)
        self.actors_started = 0
        self.actors_lost = 0
        self.slots = 0  # actors working at once (a dead one is replaced): the duty cycle's denominator

    # --- cluster -------------------------------------------------------------------------------

    def _connect(self) -> bool:
        """Connect to (or start) a cluster; True when this call started it (and must stop it)."""
        ray = self.ray
        if ray.is_initialized():
            return False
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        if self.address is None:  # a local cluster: make the harness importable by its workers
            here = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env}, configure_logging=False)
        else:
            ray.init(address=self.address, runtime_env={"env_vars": env}, log_to_driver=False)
        return True

    def _actor_options(self, devices: set[str]) -> tuple[dict[str, Any], int]:
        resources = self.ray.cluster_resources()
        if any(d.startswith("cuda:") for d in devices):
            raise ValueError("with --executor ray use device = 'cuda' or 'auto', not 'cuda:N': every actor "
                             "gets one whole GPU of its own, which it sees as cuda")
        if "cuda" in devices:
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise ValueError("the sweep runs on CUDA but the Ray cluster has no GPU; use device = 'cpu' "
                                 "or a cluster with GPUs")
            return {"num_gpus": 1}, gpus
        per_actor, cpus = self.threads or 1, int(resources.get("CPU", 1))
        if per_actor > cpus:  # such an actor would wait for resources forever
            raise ValueError(f"threads = {per_actor} per actor, but the Ray cluster has {cpus} CPU(s); "
                             f"use --threads {cpus} or fewer")
        fits = cpus // per_actor
        return {"num_cpus": per_actor}, min(self.workers or fits, fits)

    def _start_actor(self, options: dict[str, Any]):
        actor_cls = self.ray.remote(BatchWorker)
        threads = self.threads if options.get("num_gpus") else options["num_cpus"]
        self.actors_started += 1
        return actor_cls.options(max_restarts=0, max_task_retries=0, **options).remote(
            self.conditioning_cache, self.allow_unsafe, threads
        )

    # --- work ----------------------------------------------------------------------------------

    def run(self, batches: list[Batch]) -> ExecutionReport:
        """Hand batches out to actors as they free up; write results here; return counts."""
        report = ExecutionReport()
        if not batches:
            return report
        ray = self.ray
        started = self._connect()
        self.writer = SampleWriter()
        try:
            options, count = self._actor_options({b.cell.device for b in batches})
            actors = [self._start_actor(options) for _ in range(min(count, len(batches)))]
            self.slots = len(actors)
            self._dispatch(deque((b, 1) for b in batches), actors, options, report)
        except BaseException:
            close_quietly(self.writer)  # keep what finished; the original error is what matters
            raise
        finally:
            if started:
                ray.shutdown()
        self.writer.close()
        return report

    def _dispatch(self, queue: deque, idle: list, options: dict[str, Any], report: ExecutionReport) -> None:
        ray = self.ray
        pending: dict[Any, tuple[Any, Batch, int]] = {}
        written: set[tuple[str, str, int]] = set()
        while queue or pending:
            while idle and queue:
                batch, attempt = queue.popleft()
                if batch.cell.id in report.cell_errors:  # the cell cannot be set up: skip the rest of it
                    self._skip(batch)
                    continue
                actor = idle.pop()
                self.on_dispatch(actor, batch)
                pending[actor.run.remote(batch)] = (actor, batch, attempt)
            if not pending:
                break
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, batch, attempt = pending.pop(ref)
            try:
                results, cell_errors, call_seconds, setup_seconds = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.actors_lost += 1
                idle.append(self._start_actor(options))  # replace the dead actor
                if attempt < self.max_attempts:
                    queue.appendleft((batch, attempt + 1))
                else:
                    self._fail(batch, f"worker died {attempt} times on this batch: {type(err).__name__}: "
                                      f"{str(err).splitlines()[0] if str(err) else ''}", report, written)
                continue
            except ray.exceptions.RayTaskError as err:  # not expected: samples fail inside the actor
                idle.append(actor)
                self._fail(batch, f"{type(err).__name__}: {str(err).splitlines()[0]}", report, written)
                continue
            idle.append(actor)
            report.call_seconds += call_seconds
            report.setup_seconds += setup_seconds
            report.cell_errors.update(cell_errors)
            if cell_errors:
                self._skip(batch)
            self.writer.submit(partial(self._write, batch, results, report, written))

    def _write(self, batch: Batch, results, report: ExecutionReport, written: set) -> None:
        """Store a batch's results (on the writer thread, which alone touches ``written``)."""
        items = {i.key: i for i in batch.items}
        for record, audio, sample_rate in results:
            key = (record.cell_id, record.prompt_id, record.seed)
            if key in written:  # never twice, even if a retried batch comes back late
                continue
            self.store.write_sample(record, audio, sample_rate)
            written.add(key)
            report.failed += record.status != "ok"
            report.done += record.status == "ok"
            self.on_sample(items[key])

    def _fail(self, batch: Batch, error: str, report: ExecutionReport, written: set) -> None:
        results = [
            (SampleRecord(cell_id=i.cell.id, prompt_id=i.prompt.id, prompt=i.prompt.text,
                          transcription=i.prompt.transcription, seed=i.seed, status="failed", error=error,
                          batch_size=len(batch.items)), None, 0)
            for i, todo in zip(batch.items, batch.todo) if todo
        ]
        self.writer.submit(partial(self._write, batch, results, report, written))

    def _skip(self, batch: Batch) -> None:
        for item, todo in zip(batch.items, batch.todo):
            if todo:
                self.on_sample(item)
