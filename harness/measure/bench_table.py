"""The stage table printed at the end of ``bench`` (and by ``gpu-validate``)."""

from __future__ import annotations

from rich.table import Table

from harness.console import make_console
from harness.stages import DENOISE_STEP, GENERATION_STAGES, TOTAL

PEAK_KINDS = ("allocated_peak_bytes", "rss_peak_bytes", "rss_peak_since_start_bytes")  # never reserved


def bench_rows(measurements) -> list[dict]:
    """One row per (cell, batch size): median ms per top-level stage, stage sum vs total, RTF."""
    rows = []
    for m in measurements:
        stats, head = m.stats(), m.headline()
        memory = max((v for kinds in m.memory.values() for k, v in kinds.items() if k in PEAK_KINDS), default=None)
        rows.append({
            "cell": m.cell.id, "label": m.cell.label, "batch": m.batch_size,
            **{s: stats[s]["median"] * 1e3 if s in stats else float("nan") for s in GENERATION_STAGES},
            "step_ms": stats[DENOISE_STEP]["median"] * 1e3 / max(m.steps_per_call, 1)
            if DENOISE_STEP in stats else float("nan"),
            "total": stats[TOTAL]["median"] * 1e3, "total_p90": stats[TOTAL]["p90"] * 1e3,
            "sum_over_total": head["stage_sum_over_total"], "rtf": head["rtf"],
            "first_call_s": head["first_call_s"], "peak_mib": memory / 2**20 if memory else None,
        })
    return rows


def memory_rows(measurements) -> list[dict]:
    """One row per (cell, batch size, memory kind): MiB per top-level stage and the whole call."""
    rows = []
    for m in measurements:
        kinds = sorted({k for values in m.memory.values() for k in values if k != "reserved_peak_bytes"})
        for kind in kinds:
            rows.append({"cell": m.cell.id, "label": m.cell.label, "batch": m.batch_size, "kind": kind,
                         **{s: m.memory.get(s, {}).get(kind, None) for s in (*GENERATION_STAGES, TOTAL)}})
    return rows


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def print_bench(result) -> None:
    """Print the stage table of a ``bench`` run."""
    console = make_console()
    table = Table("cell", "setting", "batch", *[f"{s} ms" for s in GENERATION_STAGES], "ms/step",
                  "total ms (p50)", "p90", "stages/total", "RTF", "first call s", "peak MiB",
                  title="audioldm2-harness bench (medians over timed calls)")
    for r in bench_rows(result.measurements):
        table.add_row(r["cell"][:8], r["label"], str(r["batch"]), *[f"{r[s]:.1f}" for s in GENERATION_STAGES],
                      f"{r['step_ms']:.2f}", f"{r['total']:.1f}", f"{r['total_p90']:.1f}",
                      f"{r['sum_over_total']:.4f}", f"{r['rtf']:.3f}", f"{r['first_call_s']:.2f}",
                      "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}")
    console.print(table)
    memory = memory_rows(result.measurements)
    if memory:
        per_stage = Table("cell", "batch", "kind", *[f"{s} MiB" for s in (*GENERATION_STAGES, TOTAL)],
                          title="memory per stage (CPU: peak RSS within the stage, and its growth over the "
                                "stage's start; CUDA: allocator peaks)")
        for r in memory:
            per_stage.add_row(r["cell"][:8], str(r["batch"]), r["kind"],
                              *[_mib(r[s]) for s in (*GENERATION_STAGES, TOTAL)])
        console.print(per_stage)
    for cell_id, error in result.cell_errors.items():
        console.print(f"[red]cell {cell_id} not measured:[/red] {error}", highlight=False)
    console.print("RTF = compute seconds per second of audio; peak = largest per-stage peak "
                  "(CPU: RSS; CUDA: allocated). All figures are in the run folder's measurements table.")
    console.print(f"run folder: {result.run_dir.resolve()}", highlight=False, soft_wrap=True)
