"""The short table printed at the end of ``run``: one row per cell."""

from __future__ import annotations

import json
from collections import defaultdict


from rich.table import Table

from harness.console import make_console
from harness.generate.run import RunResult
from harness.store import RunStore


def cell_rows(store: RunStore) -> list[dict]:
    """Per-cell counts and mean per-sample compute time from the store."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in store.samples():
        groups[row["cell_id"]].append(row)
    out = []
    for cell_id, rows in groups.items():
        ok = [r for r in rows if r["status"] == "ok"]
        per_sample = [json.loads(r["timings"]).get("total", 0.0) / (r["batch_size"] or 1) for r in ok]
        mean_s = sum(per_sample) / len(per_sample) if per_sample else float("nan")
        first = rows[0]
        out.append({
            "cell": cell_id, "checkpoint": first["checkpoint"], "scheduler": first["scheduler"],
            "steps": first["steps"], "guidance": first["guidance_scale"], "ok": len(ok),
            "failed": len(rows) - len(ok), "flagged": sum(1 for r in ok if json.loads(r["flags"])),
            "s_per_sample": mean_s, "rtf": mean_s / first["audio_length_s"],
        })
    return out


def print_summary(result: RunResult) -> None:
    """Print the per-cell table, setup errors and the run folder."""
    console = make_console()
    store = RunStore.read_only(result.run_dir)
    try:
        rows = cell_rows(store)
    finally:
        store.close()
    table = Table("cell", "checkpoint", "scheduler", "steps", "guidance", "ok", "failed", "flagged",
                  "s/sample", "RTF", title="audioldm2-harness run")
    for r in rows:
        table.add_row(r["cell"], r["checkpoint"], r["scheduler"], str(r["steps"]), f"{r['guidance']:g}",
                      str(r["ok"]), str(r["failed"]), str(r["flagged"]), f"{r['s_per_sample']:.3f}",
                      f"{r['rtf']:.3f}")
    console.print(table)
    for cell_id, error in result.report.cell_errors.items():
        console.print(f"[red]cell {cell_id} not run:[/red] {error}", highlight=False)
    console.print(
        f"{result.planned} samples planned, {result.skipped} already stored, "
        f"{result.report.done} generated, {result.report.failed} failed. "
        "RTF = compute seconds per second of audio."
    )
    console.print(f"run folder: {result.run_dir.resolve()}", highlight=False, soft_wrap=True)


STAGE_COLUMNS = ["encode", "denoise", "vae_decode", "vocoder"]
PEAK_KINDS = ("allocated_peak_bytes", "rss_peak_bytes", "rss_peak_since_start_bytes")  # never reserved


def bench_rows(measurements) -> list[dict]:
    """One row per (cell, batch size): median ms per top-level stage, stage sum vs total, RTF."""
    rows = []
    for m in measurements:
        stats, head = m.stats(), m.headline()
        memory = max((v for kinds in m.memory.values() for k, v in kinds.items() if k in PEAK_KINDS), default=None)
        rows.append({
            "cell": m.cell.id, "label": m.cell.label, "batch": m.batch_size,
            **{s: stats[s]["median"] * 1e3 if s in stats else float("nan") for s in STAGE_COLUMNS},
            "step_ms": stats["denoise/step"]["median"] * 1e3 / max(m.steps_per_call, 1)
            if "denoise/step" in stats else float("nan"),
            "total": stats["total"]["median"] * 1e3, "total_p90": stats["total"]["p90"] * 1e3,
            "sum_over_total": head["stage_sum_over_total"], "rtf": head["rtf"],
            "first_call_s": head["first_call_s"], "peak_mib": memory / 2**20 if memory else float("nan"),
        })
    return rows


def print_bench(result) -> None:
    """Print the stage table of a ``bench`` run."""
    console = make_console()
    table = Table("cell", "setting", "batch", *[f"{s} ms" for s in STAGE_COLUMNS], "ms/step",
                  "total ms (p50)", "p90", "stages/total", "RTF", "first call s", "peak MiB",
                  title="audioldm2-harness bench (medians over timed calls)")
    for r in bench_rows(result.measurements):
        table.add_row(r["cell"][:8], r["label"], str(r["batch"]), *[f"{r[s]:.1f}" for s in STAGE_COLUMNS],
                      f"{r['step_ms']:.2f}", f"{r['total']:.1f}", f"{r['total_p90']:.1f}",
                      f"{r['sum_over_total']:.4f}", f"{r['rtf']:.3f}", f"{r['first_call_s']:.2f}",
                      f"{r['peak_mib']:.0f}")
    console.print(table)
    for cell_id, error in result.cell_errors.items():
        console.print(f"[red]cell {cell_id} not measured:[/red] {error}", highlight=False)
    console.print("RTF = compute seconds per second of audio; peak = largest per-stage peak "
                  "(CPU: RSS; CUDA: allocated). All figures are in the run folder's measurements table.")
    console.print(f"run folder: {result.run_dir.resolve()}", highlight=False, soft_wrap=True)
