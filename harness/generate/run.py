"""Plan a sweep against its run folder and hand the missing work to an executor.

``plan`` expands the sweep into (cell, prompt, seed) work items and drops those the store
already holds, which is all that resuming needs. Only one process writes a run folder at a
time: an OS file lock (released by the kernel when its process dies, so a killed run never
leaves a stale lock) guards it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.checkpoints.registry import describe
from harness.spec import Cell, ConfigError, SweepSpec, check_runtime, expand, load_spec
from harness.data.prompts import Prompt, PromptSet, load_prompt_set
from harness.environment import fingerprint, resolve_device
from harness.generate.local import Batch, ExecutionReport, LocalExecutor, WorkItem
from harness.plan.shard import Shard, check_shard_folder, partition, shard_meta
from harness.generate.load import check_device_dtype
from harness.store import RunStore, acquire_lock


@dataclass
class RunResult:
    """Outcome of one ``run`` call."""

    run_dir: Path
    cells: list[Cell]
    planned: int
    skipped: int
    report: ExecutionReport
    shard_note: str | None = None  # with --shard: this shard's part of the sweep


def default_run_dir(spec: SweepSpec) -> Path:
    """runs/<sweep name>: a stable folder, so running the same sweep again resumes it."""
    return Path("runs") / spec.name


def prompts_for(checkpoint: str, prompts: PromptSet, limit: int | None) -> list[Prompt]:
    """The prompts a checkpoint runs: speech checkpoints take only prompts with a transcription."""
    chosen = list(prompts.prompts)
    if describe(checkpoint).needs_transcription:
        chosen = [p for p in chosen if p.transcription]
        if not chosen:
            raise ConfigError(
                f"checkpoint {checkpoint!r} needs a transcription, but prompt set {prompts.name!r} "
                "has no prompt with one; add 'transcription' to some prompts"
            )
    return chosen[:limit] if limit else chosen


def cut_batches(spec: SweepSpec, cells: list[Cell], prompts: PromptSet, batch_size: int) -> list[Batch]:
    """The full plan, cut into batches whatever the store holds (so resumes and shards agree)."""
    per_checkpoint = {c.id: prompts_for(c.id, prompts, spec.prompts.limit) for c in spec.checkpoints}
    batches = []
    for cell in cells:
        items = [WorkItem(cell, p, seed) for p in per_checkpoint[cell.checkpoint] for seed in spec.seeds]
        for start in range(0, len(items), batch_size):
            chunk = tuple(items[start:start + batch_size])
            batches.append(Batch(cell, chunk, (True,) * len(chunk)))
    return batches


def plan(spec: SweepSpec, cells: list[Cell], prompts: PromptSet, done: set[tuple[str, str, int]],
         batch_size: int, shard: Shard | None = None) -> tuple[list[Batch], int, int]:
    """Batches holding work not yet in the store; also (samples to do, samples already stored).

    With ``shard``, only the batches the partition of the full plan gives that shard.
    """
    full = cut_batches(spec, cells, prompts, batch_size)
    if shard is not None:
        full = partition(full, shard.count).select(shard)
    batches, todo_count, total = [], 0, 0
    for batch in full:
        total += len(batch.items)
        todo = tuple(i.key not in done for i in batch.items)
        if any(todo):
            batches.append(Batch(batch.cell, batch.items, todo))
            todo_count += sum(todo)
    return batches, todo_count, total - todo_count


def prepare(config: str | Path) -> tuple[SweepSpec, list[Cell], PromptSet]:
    """Load a sweep file, expand its cells on the resolved device, check them, load its prompts."""
    spec = load_spec(config)
    cells = expand(spec, resolve_device(spec.device))
    for cell in cells:
        try:
            check_device_dtype(cell.dtype, cell.device)
            check_runtime(cell.runtime, cell.device)
        except ValueError as err:
            raise ConfigError(f"{config}: {err}") from None
    return spec, cells, load_prompt_set(spec.prompts.set)


@contextmanager
def open_store(run_dir: Path) -> Iterator[RunStore]:
    """The run folder's store, held under the writer lock for the duration."""
    lock = acquire_lock(run_dir)
    try:
        store = RunStore(run_dir)
        try:
            yield store
        finally:
            store.close()
    finally:
        lock.release()


def run_sweep(config: str | Path, run_dir: str | Path | None = None, *, retry_failed: bool = False,
              batch_size: int | None = None, conditioning_cache: bool = True,
              progress: bool = True, shard: Shard | None = None, executor: str = "local",
              executor_options: dict | None = None) -> RunResult:
    """Run (or resume) a sweep file into a run folder (with ``shard``: only that part of it)."""
    spec, cells, prompts = prepare(config)
    run_dir_given = bool(run_dir)
    run_dir = Path(run_dir) if run_dir else default_run_dir(spec)
    if shard is not None and not run_dir_given:
        run_dir = run_dir / shard.dirname
    with open_store(run_dir) as store:
        return _run_locked(spec, Path(config), cells, prompts, store, retry_failed,
                           batch_size or spec.batch_size, conditioning_cache, progress, shard,
                           executor, executor_options or {})


def _run_locked(spec, config_path, cells, prompts, store, retry_failed, batch_size,
                conditioning_cache, progress, shard=None, executor="local", executor_options=None) -> RunResult:
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
    done = store.done_keys(include_failed=not retry_failed)
    batches, todo, skipped = plan(spec, cells, prompts, done, batch_size, shard)
    bar = _progress_bar(todo, skipped, progress)
    if executor == "ray":  # actors compute, this process alone writes the store
        from harness.generate.ray import RayExecutor

        executor = RayExecutor(store, batch_size, conditioning_cache, spec.allow_unsafe_schedulers,
                               on_sample=lambda item: _advance(bar, item), **(executor_options or {}))
    else:
        executor = LocalExecutor(store, batch_size, conditioning_cache, spec.allow_unsafe_schedulers,
                                 on_sample=lambda item: _advance(bar, item))
    try:
        report = executor.run(batches)
    finally:
        bar.close()
    return RunResult(store.root, cells, todo, skipped, report, shard_note)


def _progress_bar(total: int, skipped: int, enabled: bool):
    from tqdm.auto import tqdm

    desc = f"samples ({skipped} already stored)" if skipped else "samples"
    return tqdm(total=total, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True)


def _advance(bar, item: WorkItem) -> None:
    bar.set_postfix_str(item.cell.label, refresh=False)
    bar.update(1)
