"""Plan a sweep against its run folder and hand the missing work to an executor.

``plan`` expands the sweep into (cell, prompt, seed) work items and drops those the store
already holds, which is all that resuming needs. Only one process writes a run folder at a
time: an OS file lock (released by the kernel when its process dies, so a killed run never
leaves a stale lock) guards it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.spec import Cell, ConfigError, SweepSpec, check_runtime, expand, load_spec
from harness.data.prompts import PromptSet, load_prompt_set
from harness.environment import fingerprint, resolve_device
from harness.generate.local import ExecutionReport, LocalExecutor
from harness.plan import WorkItem, cut_batches, plan
from harness.plan.shard import Shard, check_shard_folder, partition, shard_meta
from harness.generate.load import check_device_dtype
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
              executor_options: dict | None = None, threads: int | None = None) -> RunResult:
    """Run (or resume) a sweep file into a run folder (with ``shard``: only that part of it)."""
    spec, cells, prompts = prepare(config, threads)
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
