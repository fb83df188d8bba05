"""Plan a sweep against its run folder and hand the missing work to an executor.

``plan`` expands the sweep into (cell, prompt, seed) work items and drops those the store
already holds, which is all that resuming needs. Only one process writes a run folder at a
time: an OS file lock (released by the kernel when its process dies, so a killed run never
leaves a stale lock) guards it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.spec import Cell, ConfigError, SweepSpec, check_runtime, expand, load_spec
from harness.data.prompts import PromptSet, load_prompt_set
from harness.environment import fingerprint, resolve_device
from harness.generate.local import ExecutionReport, LocalExecutor
from harness.plan import WorkItem, cut_batches, plan
from harness.plan.shard import Shard, check_shard_folder, partition, shard_meta
from harness.generate.load import check_device_dtype
from harness.measure.utilization import GpuUtilization
from harness.store import open_store


@dataclass
class RunResult:
    """Outcome of one ``run`` call."""

    run_dir: Path
    cells: list[Cell]
    planned: int
    skipped: int
    report: ExecutionReport
    shard_note: str | None = None  # with --shard: this shard's part of the sweep
    duty: dict | None = None  # pipeline-call seconds over wall seconds of this invocation (see duty_cycle)
    damaged: list[str] = field(default_factory=list)  # stored samples regenerated: file missing or changed


def default_run_dir(spec: SweepSpec) -> Path:
    """runs/<sweep name>: a stable folder, so running the same sweep again resumes it."""
    return Path("runs") / spec.name


def prepare(config: str | Path, threads: int | None = None) -> tuple[SweepSpec, list[Cell], PromptSet]:
    """Load a sweep file, expand its cells on the resolved device, check them, load its prompts,
    and set torch's threads (``threads``, else the sweep's ``threads``, else torch's default)."""
    from harness.generate.runtime import apply_threads

    spec = load_spec(config)
    apply_threads(threads if threads is not None else spec.threads)  # before the fingerprint records it
    cells = expand(spec, resolve_device(spec.device))
    for cell in cells:
        try:
            check_device_dtype(cell.dtype, cell.device)
            check_runtime(cell.runtime, cell.device)
        except ValueError as err:
            raise ConfigError(f"{config}: {err}") from None
    return spec, cells, load_prompt_set(spec.prompts.set)


def run_sweep(config: str | Path, run_dir: str | Path | None = None, *, retry_failed: bool = False,
              batch_size: int | None = None, conditioning_cache: bool = True,
              progress: bool = True, shard: Shard | None = None, executor: str = "local",
              executor_options: dict | None = None, async_writes: bool = True,
              threads: int | None = None) -> RunResult:
    """Run (or resume) a sweep file into a run folder (with ``shard``: only that part of it)."""
    spec, cells, prompts = prepare(config, threads)
    run_dir_given = bool(run_dir)
    run_dir = Path(run_dir) if run_dir else default_run_dir(spec)
    if shard is not None and not run_dir_given:
        run_dir = run_dir / shard.dirname
    executor_options = dict(executor_options or {})
    if executor == "ray":  # actors set their own torch threads: the same setting as this process
        executor_options.setdefault("threads", threads if threads is not None else spec.threads)
    with open_store(run_dir) as store:
        return _run_locked(spec, Path(config), cells, prompts, store, retry_failed,
                           batch_size or spec.batch_size, conditioning_cache, progress, shard,
                           executor, executor_options, async_writes)


def _run_locked(spec, config_path, cells, prompts, store, retry_failed, batch_size,
                conditioning_cache, progress, shard=None, executor="local", executor_options=None,
                async_writes=True) -> RunResult:
    store.check_prompts({p.id: (p.text, p.transcription) for p in prompts.prompts})
    check_shard_folder(store.get_meta("shard"), bool(store.done_keys()), shard, batch_size, store.root)
    shard_note = None
    if shard is not None:
        part = partition(cut_batches(spec, cells, prompts, batch_size), shard.count)
        store.set_meta("shard", shard_meta(shard, part, batch_size))
        shard_note = part.describe(shard)
    store.set_meta("environment", fingerprint())
    store.set_meta(f"config:{spec.name}", config_path.read_text())
    store.add_cells(cells, {})  # batch size lives on sample rows: it may differ between resumes
    damaged = _drop_damaged(store, cells)
    done = store.done_keys(include_failed=not retry_failed)
    batches, todo, skipped = plan(spec, cells, prompts, done, batch_size, shard)
    bar = _progress_bar(todo, skipped, progress)
    if executor == "ray":  # actors compute, this process alone writes the store
        from harness.generate.ray import RayExecutor

        executor = RayExecutor(store, batch_size, conditioning_cache, spec.allow_unsafe_schedulers,
                               on_sample=lambda item: _advance(bar, item), **(executor_options or {}))
    else:
        executor = LocalExecutor(store, batch_size, conditioning_cache, spec.allow_unsafe_schedulers,
                                 on_sample=lambda item: _advance(bar, item), async_writes=async_writes)
    start = time.perf_counter()
    try:
        with GpuUtilization(cells[0].device if cells else "cpu") as gpu:
            report = executor.run(batches)
    finally:
        bar.close()
    duty = None
    if todo:
        # Ray actors work side by side, each on its own device: their calls are shared out over
        # wall x actors, and the driver's NVML sees none of their GPUs.
        workers = getattr(executor, "slots", 1) or 1
        duty = duty_cycle(report.call_seconds, time.perf_counter() - start, report.setup_seconds,
                          gpu.mean() if isinstance(executor, LocalExecutor) else None, workers)
        store.set_meta("duty_cycle", duty)
    return RunResult(store.root, cells, todo, skipped, report, shard_note, duty, damaged)


def _drop_damaged(store, cells: list[Cell]) -> list[str]:
    """Forget stored samples whose audio file is missing or changed (saying so), so they are made again."""
    from harness.store import sample_key

    damaged = [f"{sample_key(row)}: {problem}" for row, problem in store.drop_damaged_samples(c.id for c in cells)]
    if damaged:
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        print(f"audioldm2-harness run: {len(damaged)} stored sample(s) have a missing or changed audio file and "
              f"will be generated again: {'; '.join(damaged[:3])}{more}", file=sys.stderr)
    return damaged


def duty_cycle(call_seconds: float, wall_seconds: float, setup_seconds: float,
               gpu_utilization: float | None, workers: int = 1) -> dict[str, float | None]:
    """How busy generation kept the devices: pipeline-call seconds over the sweep's wall seconds
    times the workers generating at once (and over that less per-cell set-up: loading pipelines,
    swapping schedulers), with NVML's mean utilisation on CUDA."""
    capacity = wall_seconds * workers
    busy_wall = max(capacity - setup_seconds, 1e-9)
    return {"call_seconds": call_seconds, "wall_seconds": wall_seconds, "setup_seconds": setup_seconds,
            "workers": workers, "duty_cycle": call_seconds / max(capacity, 1e-9),
            "duty_cycle_without_setup": min(call_seconds / busy_wall, 1.0),
            "gpu_utilization_mean": gpu_utilization}


def _progress_bar(total: int, skipped: int, enabled: bool):
    from tqdm.auto import tqdm

    desc = f"samples ({skipped} already stored)" if skipped else "samples"
    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True)


def _advance(bar, item: WorkItem) -> None:
    bar.set_postfix_str(item.cell.label, refresh=False)
    bar.update(1)
