"""``bench``: run the latency/memory protocol (measure.py) over every cell of a sweep and store
the figures in the run folder's ``measurements`` table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.spec import Cell, LatencySpec
from harness.environment import fingerprint
from harness.measure.stages import CellMeasurement, Protocol, measure_cell
from harness.generate.load import PipelineCache
from harness.generate.run import default_run_dir, prepare
from harness.plan import prompts_for
from harness.store import RunStore, open_store


@dataclass
class BenchResult:
    """Measurements of every cell that could be set up, and the setup errors of the rest."""

    run_dir: Path
    measurements: list[CellMeasurement] = field(default_factory=list)
    cell_errors: dict[str, str] = field(default_factory=dict)


def rows_of(m: CellMeasurement, weights_bytes: int) -> list[tuple[str, str, str, float]]:
    """(kind, stage, metric, value) rows for the store."""
    rows = [("latency", stage, metric, value)
            for stage, stats in m.stats().items() for metric, value in stats.items()]
    # Every timed call too, so gates can test significance instead of comparing two medians.
    rows += [("call", stage, f"{i:04d}", value) for stage, values in m.durations.items()
             for i, value in enumerate(values)]
    rows += [("memory", stage, kind, value) for stage, kinds in m.memory.items() for kind, value in kinds.items()]
    rows += [("headline", "call", metric, value) for metric, value in m.headline().items()]
    rows.append(("memory", "weights", "weights_bytes", weights_bytes))
    if m.steps_per_call:
        rows.append(("headline", "call", "unet_calls", m.steps_per_call))
    return rows


def weights_bytes(pipe) -> int:
    """Bytes of every parameter and buffer of the pipeline's modules."""
    import torch

    total = 0
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    return total


def _protocols(spec: LatencySpec, overrides: dict, batch_size: int) -> list[Protocol]:
    merged = spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    # A call is for the sweep's batch_size samples unless [latency].batch_sizes says otherwise.
    return [Protocol(merged.warmup, merged.repeats, merged.memory, b) for b in merged.batch_sizes or [batch_size]]


def bench_sweep(config: str | Path, run_dir: str | Path | None = None, progress: bool = True,
                threads: int | None = None, **overrides) -> BenchResult:
    """Measure every cell of a sweep file; ``overrides`` replace [latency] keys (None = keep)."""
    spec, cells, prompts = prepare(config, threads)
    protocols = _protocols(spec.latency, overrides, spec.batch_size)
    with open_store(Path(run_dir) if run_dir else default_run_dir(spec)) as store:
        store.set_meta("environment", fingerprint())
        store.add_cells(cells, {})
        return _measure_all(spec, cells, prompts, protocols, store, progress)


def _measure_all(spec, cells: list[Cell], prompts, protocols, store: RunStore, progress: bool) -> BenchResult:
    from tqdm.auto import tqdm

    result = BenchResult(store.root)
    cache = PipelineCache()
    for cell in tqdm(cells, desc="cells", unit="cell", disable=not progress):
        loaded = None  # so the next load can free the previous pipeline first
        try:
            loads = cache.loads
            loaded = cache.for_cell(cell, spec.allow_unsafe_schedulers)
            load_s = loaded.load_seconds if cache.loads > loads else None
            prompt = prompts_for(cell.checkpoint, prompts, spec.prompts.limit)[0]
            for protocol in protocols:
                m = measure_cell(loaded, cell, prompt.text, prompt.transcription, protocol, load_s)
                store.write_measurements(cell.id, protocol.batch_size, rows_of(m, weights_bytes(loaded.pipe)))
                result.measurements.append(m)
                load_s = None  # cold start belongs to the first protocol only
        except Exception as err:  # noqa: BLE001 - a cell that cannot run is reported, the rest go on
            result.cell_errors[cell.id] = f"{type(err).__name__}: {err}"
    return result
