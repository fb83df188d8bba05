"""Store -> pandas: one row per (run, cell) with every figure a report or a gate needs.

Column families of ``cell_frame`` (all flat, so the frame goes to CSV/Parquet as is):

* identity: ``run``, ``cell_id``, ``config_key`` (the cell's settings without library
  versions, so the same configuration matches across runs made before and after an upgrade),
  ``label``, ``checkpoint``, ``scheduler``, ``steps``, ``guidance_scale``, ``dtype``, ...
* counts: ``n_ok``, ``n_failed``, ``n_flagged``;
* latency, ms: ``latency_ms:<stage>:p50`` and ``:p90`` from ``bench`` measurements (batch 1 or
  the smallest measured) when the cell has them, else from the per-batch timings ``run``
  stored (``latency_source`` says which; the two are not mixed within a cell);
  ``rtf`` (compute seconds per second of audio);
* memory, MiB: ``memory_mib:<stage>:<kind>`` with the kind's own label (rss_peak,
  allocated_peak, reserved_peak, nvml_used), never one for another;
* quality: ``<metric>:<embedder>`` and its ``:ci_low``, ``:ci_high``, ``:n``; when one cell was
  scored against several references the figure gets ``@<reference id>``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.store import RunStore, StoreError

STAGES = ("encode", "denoise", "vae_decode", "vocoder", "rerank")
TOTAL = "total"
QUALITY_METRICS = ("fad", "kad", "clap_score")


@dataclass
class RunData:
    """Everything a report or gate reads from one run folder."""

    path: Path
    label: str
    environment: dict[str, Any]
    cells: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    measurements: list[dict[str, Any]]
    metrics: list[dict[str, Any]] = field(default_factory=list)


def load_run(run_dir: str | Path, label: str | None = None) -> RunData:
    """Read a run folder (read-only); ``label`` defaults to the folder name."""
    path = Path(run_dir)
    if not (path / "run.sqlite").is_file():
        raise StoreError(f"{path} is not a run folder (no run.sqlite); pass a folder written by "
                         "`audioldm2-harness run` or `bench`")
    store = RunStore.read_only(path)
    try:
        cells = [dict(r) for r in store.db.execute("SELECT * FROM cells ORDER BY created_at, id")]
        samples = [dict(r) for r in store.db.execute(
            "SELECT * FROM samples ORDER BY cell_id, prompt_id, seed")]
        return RunData(path, label or path.resolve().name, store.get_meta("environment", {}) or {},
                       cells, samples, store.measurements(), store.metrics())
    finally:
        store.close()


def config_key(cell: dict[str, Any]) -> str:
    """Hash of a cell's settings without the library versions (12 hex digits)."""
    spec = json.loads(cell["spec"])
    spec.pop("versions", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def cell_label(cell: dict[str, Any]) -> str:
    """Short human-readable description of a cell's settings."""
    name = Path(cell["checkpoint"]).name
    return f"{name}/{cell['scheduler']}/{cell['steps']}st/g{cell['guidance_scale']:g}/{cell['dtype']}"


def cell_frame(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per (run, cell) with identity, counts, latency, memory and quality columns."""
    names = _quality_names(runs)
    rows = []
    for run in runs:
        for cell in run.cells:
            rows.append({
                **_identity(run, cell), **_counts(run, cell["id"]),
                **_latency(run, cell), **_memory(run, cell["id"]),
                **_quality(run, cell["id"], names),
            })
    return pd.DataFrame(rows)


def sample_frame(runs: Sequence[RunData]) -> pd.DataFrame:
    """One row per stored sample, with its cell's config key and the absolute audio path."""
    rows = []
    for run in runs:
        keys = {c["id"]: config_key(c) for c in run.cells}
        for s in run.samples:
            rows.append({
                "run": run.label, "cell_id": s["cell_id"], "config_key": keys.get(s["cell_id"]),
                "prompt_id": s["prompt_id"], "prompt": s["prompt"], "seed": s["seed"],
                "status": s["status"], "error": s["error"], "flags": ",".join(json.loads(s["flags"])),
                "audio_file": str(run.path / s["audio_path"]) if s["audio_path"] else None,
                "audio_sha256": s["audio_sha256"],
            })
    return pd.DataFrame(rows)


def latency_samples(run: RunData, cell_id: str, stage: str = TOTAL) -> tuple[np.ndarray, str]:
    """Per-call seconds of one stage (bench calls, else per-sample run timings) and their source."""
    calls = [m for m in run.measurements
             if m["cell_id"] == cell_id and m["kind"] == "call" and m["stage"] == stage]
    if calls:
        smallest = min(m["batch_size"] for m in calls)
        values = [m["value"] for m in sorted(calls, key=lambda m: m["metric"]) if m["batch_size"] == smallest]
        return np.asarray(values, dtype=np.float64), "bench"
    return _run_timings(run, cell_id, stage), "run"


def _run_timings(run: RunData, cell_id: str, stage: str) -> np.ndarray:
    # Samples of one batch share its timings row; keep each batch once, per sample of the batch.
    seen: dict[str, float] = {}
    for s in run.samples:
        if s["cell_id"] != cell_id or s["status"] != "ok":
            continue
        timings = json.loads(s["timings"])
        if stage in timings:
            seen.setdefault(s["timings"], timings[stage] / (s["batch_size"] or 1))
    return np.asarray(list(seen.values()), dtype=np.float64)


def _identity(run: RunData, cell: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": run.label, "cell_id": cell["id"], "config_key": config_key(cell), "label": cell_label(cell),
        "checkpoint": cell["checkpoint"], "scheduler": cell["scheduler"],
        "scheduler_type": cell["scheduler_type"], "scheduler_options": cell["scheduler_options"],
        "steps": cell["steps"], "guidance_scale": cell["guidance_scale"], "dtype": cell["dtype"],
        "device": cell["device"], "negative_prompt": cell["negative_prompt"],
        "audio_length_s": cell["audio_length_s"], "runtime_options": cell["runtime_options"],
    }


def _counts(run: RunData, cell_id: str) -> dict[str, int]:
    rows = [s for s in run.samples if s["cell_id"] == cell_id]
    ok = [s for s in rows if s["status"] == "ok"]
    return {"n_ok": len(ok), "n_failed": len(rows) - len(ok),
            "n_flagged": sum(1 for s in ok if json.loads(s["flags"]))}


def _latency(run: RunData, cell: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    source = None
    for stage in (TOTAL, *STAGES):
        values, src = latency_samples(run, cell["id"], stage)
        if values.size:
            source = source or src
            out[f"latency_ms:{stage}:p50"] = float(np.median(values)) * 1e3
            out[f"latency_ms:{stage}:p90"] = float(np.percentile(values, 90)) * 1e3
    if f"latency_ms:{TOTAL}:p50" in out:
        out["rtf"] = out[f"latency_ms:{TOTAL}:p50"] / 1e3 / cell["audio_length_s"]
    out["latency_source"] = source
    return out


def _memory(run: RunData, cell_id: str) -> dict[str, float]:
    rows = [m for m in run.measurements if m["cell_id"] == cell_id and m["kind"] == "memory"]
    if not rows:
        return {}
    smallest = min(m["batch_size"] for m in rows)
    return {f"memory_mib:{m['stage']}:{m['metric'].removesuffix('_bytes')}": m["value"] / 2**20
            for m in rows if m["batch_size"] == smallest and "/" not in m["stage"]}


def _quality_names(runs: Sequence[RunData]) -> dict[tuple, str]:
    """Column name per (metric, embedder, reference id); the reference is named only when needed."""
    refs: dict[tuple, set[str]] = {}
    for run in runs:
        for m in run.metrics:
            refs.setdefault((m["metric"], m["embedder"]), set()).add(m["reference_id"])
    names = {}
    for (metric, embedder), ids in refs.items():
        for ref in ids:
            suffix = f"@{ref[:12]}" if len(ids) > 1 else ""
            names[(metric, embedder, ref)] = f"{metric}:{embedder}{suffix}"
    return names


def _quality(run: RunData, cell_id: str, names: dict[tuple, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in run.metrics:
        if m["cell_id"] != cell_id:
            continue
        name = names[(m["metric"], m["embedder"], m["reference_id"])]
        out.update({name: m["value"], f"{name}:ci_low": m["ci_low"], f"{name}:ci_high": m["ci_high"],
                    f"{name}:n": m["n"]})
    return out


def quality_columns(frame: pd.DataFrame) -> list[str]:
    """The point-value quality columns of a cell frame (no CI or n columns)."""
    return [c for c in frame.columns
            if c.split(":")[0] in QUALITY_METRICS and c.count(":") == 1]
