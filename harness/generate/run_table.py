"""The short table printed at the end of ``run``: one row per cell."""

from __future__ import annotations

import json
from collections import defaultdict

from rich.table import Table

from harness.console import make_console
from harness.generate.run import RunResult
from harness.store import RunStore, read_store


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
    with read_store(result.run_dir) as store:
        rows = cell_rows(store)
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
    if result.duty:
        d = result.duty
        across = f" x {d['workers']} workers" if d.get("workers", 1) > 1 else ""
        console.print(f"duty cycle {d['duty_cycle']:.3f} (pipeline calls {d['call_seconds']:.1f} s of "
                      f"{d['wall_seconds']:.1f} s wall{across}; {d['duty_cycle_without_setup']:.3f} without "
                      f"{d['setup_seconds']:.1f} s of cell set-up (loading pipelines, swapping schedulers)"
                      + (f"; GPU utilisation {d['gpu_utilization_mean']:.0f}%" if d["gpu_utilization_mean"] is not None
                         else "") + ")", highlight=False)
    console.print(f"run folder: {result.run_dir.resolve()}", highlight=False, soft_wrap=True)
