"""Store -> pandas: one row per (run, cell) with every figure a report or a gate needs.

Column families of ``cell_frame`` (all flat, so the frame goes to CSV/Parquet as is):

* identity: ``run``, ``cell_id``, ``config_key`` (the cell's settings without library
  versions, so the same configuration matches across runs made before and after an upgrade),
  ``label``, ``checkpoint``, ``scheduler``, ``steps``, ``guidance_scale``, ``dtype``, ...
* counts: ``n_ok``, ``n_failed``, ``n_flagged``;
* latency, ms: ``latency_ms:<stage>:p50`` and ``:p90`` from ``bench`` measurements (per call,
  at the smallest measured batch) when the cell has them, else from the timings ``run`` stored
  (per sample); ``latency_source`` and ``latency_unit`` say which (the two are never mixed
  within a cell); ``rtf`` (compute seconds per second of audio, batch accounted for);
* memory, MiB: ``memory_mib:<stage>:<kind>`` with the kind's own label (rss_peak, rss_growth,
  allocated_peak, reserved_peak, nvml_used), never one for another;
* quality: ``<metric>:<embedder>`` and its ``:ci_low``, ``:ci_high``, ``:n``; when one cell was
  scored against several references the figure gets ``@<reference id>``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.stages import STAGES, TOTAL
from harness.store import inside_run, read_store

QUALITY_METRICS = ("fad", "kad", "clap_score", "wer", "cer")  # the default set; every registered metric is a quality figure
TRANSCRIPT_METRICS = ("wer", "cer")  # written by `transcribe` (harness/score/asr), lower is better


def is_quality_metric(name: str) -> bool:
    """Whether ``name`` is a registered metric (imported late: reading runs needs no scoring code)."""
    from harness.score.metrics.registry import available_metrics

    return name in available_metrics() or name in TRANSCRIPT_METRICS


def higher_is_better(name: str) -> bool:
    """The registered metric's direction (CLAP score and Inception Score: higher is better)."""
    from harness.score.metrics.registry import metric_class

    try:
        return metric_class(name).higher_is_better
    except ValueError:
        return False


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
    duty: dict[str, Any] | None = None  # the last run invocation's duty cycle (generate/run.py)

    # Rows grouped by cell once: a sweep can hold hundreds of cells and ~1M samples, and every
    # per-cell figure would otherwise scan all of them again.
    @cached_property
    def samples_by_cell(self) -> dict[str, list[dict[str, Any]]]:
        """Sample rows per cell id."""
        return _group(self.samples)

    @cached_property
    def measurements_by_cell(self) -> dict[str, list[dict[str, Any]]]:
        """Measurement rows per cell id."""
        return _group(self.measurements)

    @cached_property
    def metrics_by_cell(self) -> dict[str, list[dict[str, Any]]]:
        """Metric rows per cell id."""
        return _group(self.metrics)


def _group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["cell_id"], []).append(row)
    return out


def load_run(run_dir: str | Path, label: str | None = None) -> RunData:
    """Read a run folder (read-only); ``label`` defaults to the folder name."""
    path = Path(run_dir)
    with read_store(path) as store:
        cells = [dict(r) for r in store.db.execute("SELECT * FROM cells ORDER BY created_at, id")]
        samples = [dict(r) for r in store.db.execute(
            "SELECT * FROM samples ORDER BY cell_id, prompt_id, seed")]
        return RunData(path, label or path.resolve().name, store.get_meta("environment", {}) or {},
                       cells, samples, store.measurements(), store.metrics(), store.get_meta("duty_cycle"))


def config_key(cell: dict[str, Any]) -> str:
    """Hash of a cell's settings without the library versions (12 hex digits)."""
    spec = json.loads(cell["spec"])
    spec.pop("versions", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


_RUNTIME_DEFAULTS = {"attention_backend": "sdpa", "compile": "none", "cpu_offload": False, "vae_slicing": False,
                     "vae_tiling": False}


def cell_label(cell: dict[str, Any]) -> str:
    """Short description of a cell's settings; runtime options and negative prompts only when set."""
    name = Path(cell["checkpoint"]).name
    label = (f"{name}/{cell['scheduler']}/{cell['steps']}st/g{cell['guidance_scale']:g}/{cell['dtype']}"
             f"/{cell['audio_length_s']:g}s")
    if cell.get("negative_prompt"):
        label += "/neg"
    runtime = json.loads(cell.get("runtime_options") or "{}")
    extras = [f"{k}={v}" for k, v in sorted(runtime.items()) if _RUNTIME_DEFAULTS.get(k, v) != v]
    return label + (f"/{','.join(extras)}" if extras else "")


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
    """One row per stored sample, with its cell's config key and its audio path (refused, StoreError,
    unless inside the run folder)."""
    rows = []
    for run in runs:
        keys = {c["id"]: config_key(c) for c in run.cells}
        for s in run.samples:
            rows.append({
                "run": run.label, "cell_id": s["cell_id"], "config_key": keys.get(s["cell_id"]),
                "prompt_id": s["prompt_id"], "prompt": s["prompt"], "seed": s["seed"],
                "status": s["status"], "error": s["error"], "flags": ",".join(json.loads(s["flags"])),
                # Checked here, once for every reader: a crafted row must not name a file outside the run.
                "audio_file": str(inside_run(run.path, s["audio_path"])) if s["audio_path"] else None,
                "audio_sha256": s["audio_sha256"],
            })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Latency:
    """Timings of one stage of one cell: per timed call of ``batch`` samples (bench), or per
    sample (run timings, ``batch`` 1); ``p50``/``p90`` come from ``seconds`` when it is there,
    else from the summary rows of a bench made before per-call rows were stored."""

    seconds: np.ndarray
    source: str  # "bench", "run" or "bench summary"
    batch: int
    p50: float
    p90: float

    @property
    def unit(self) -> str:
        """What one observation is: 'ms per call of N' or 'ms per sample'."""
        return f"ms per call of {self.batch}" if self.source.startswith("bench") else "ms per sample"


def cell_latency(run: RunData, cell_id: str, stage: str = TOTAL) -> Latency | None:
    """Latency of one stage: bench calls at the smallest measured batch, else run timings."""
    rows = [m for m in run.measurements_by_cell.get(cell_id, []) if m["stage"] == stage
            and m["kind"] in ("call", "latency")]
    if rows:
        batch = min(m["batch_size"] for m in rows)
        calls = sorted((m for m in rows if m["kind"] == "call" and m["batch_size"] == batch), key=lambda m: m["metric"])
        if calls:
            values = np.asarray([m["value"] for m in calls], dtype=np.float64)
            return Latency(values, "bench", batch, float(np.median(values)), float(np.percentile(values, 90)))
        stats = {m["metric"]: m["value"] for m in rows if m["batch_size"] == batch}
        if "median" in stats:
            return Latency(np.zeros(0), "bench summary", batch, stats["median"], stats.get("p90", float("nan")))
    values = _run_timings(run, cell_id, stage)
    if not values.size:
        return None
    return Latency(values, "run", 1, float(np.median(values)), float(np.percentile(values, 90)))


def _run_timings(run: RunData, cell_id: str, stage: str) -> np.ndarray:
    # Samples of one batch share its timings row; keep each batch once, per sample of the batch.
    seen: dict[str, float] = {}
    for s in run.samples_by_cell.get(cell_id, []):
        if s["status"] != "ok" or s["timings"] in seen:
            continue
        timings = json.loads(s["timings"])
        seen[s["timings"]] = timings[stage] / (s["batch_size"] or 1) if stage in timings else math.nan
    values = np.asarray(list(seen.values()), dtype=np.float64)
    return values[~np.isnan(values)]


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
    rows = run.samples_by_cell.get(cell_id, [])
    ok = [s for s in rows if s["status"] == "ok"]
    return {"n_ok": len(ok), "n_failed": len(rows) - len(ok),
            "n_flagged": sum(1 for s in ok if json.loads(s["flags"]))}


def _latency(run: RunData, cell: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_source": None, "latency_unit": None}
    for stage in (TOTAL, *STAGES):
        lat = cell_latency(run, cell["id"], stage)
        if lat is None:
            continue
        if stage == TOTAL:
            out.update({"latency_source": lat.source, "latency_unit": lat.unit,
                        "rtf": lat.p50 / (cell["audio_length_s"] * lat.batch)})  # compute s per audio s
        out[f"latency_ms:{stage}:p50"] = lat.p50 * 1e3
        out[f"latency_ms:{stage}:p90"] = lat.p90 * 1e3
    return out


def _memory(run: RunData, cell_id: str) -> dict[str, float]:
    rows = [m for m in run.measurements_by_cell.get(cell_id, []) if m["kind"] == "memory"]
    if not rows:
        return {}
    smallest = min(m["batch_size"] for m in rows)
    return {f"memory_mib:{m['stage']}:{m['metric'].removesuffix('_bytes')}": m["value"] / 2**20
            for m in rows if m["batch_size"] == smallest and "/" not in m["stage"]}


def quality_names(metric_rows: Sequence[dict[str, Any]]) -> dict[tuple, str]:
    """Column name per (metric, embedder, embedder_id, reference_id): ``metric:embedder``, with
    ``@<reference id>`` and ``#<embedder id>`` added only where the rows need them told apart."""
    seen: dict[tuple, set[tuple[str, str]]] = {}
    for m in metric_rows:
        seen.setdefault((m["metric"], m["embedder"]), set()).add((m["embedder_id"], m["reference_id"]))
    names = {}
    for (metric, embedder), pairs in seen.items():
        many_refs = len({r for _, r in pairs}) > 1
        many_ids = len({e for e, _ in pairs}) > 1
        for emb_id, ref in pairs:
            name = f"{metric}:{embedder}" + (f"@{ref[:12]}" if many_refs else "")
            names[(metric, embedder, emb_id, ref)] = name + (f"#{emb_id.rsplit('-', 1)[-1][:8]}" if many_ids else "")
    return names


def figure_stem(name: str) -> str:
    """``metric:embedder`` without the ``@reference`` / ``#embedder`` suffixes ``quality_names`` may add."""
    return name.split("@", 1)[0].split("#", 1)[0]


def _quality_names(runs: Sequence[RunData]) -> dict[tuple, str]:
    return quality_names([m for run in runs for m in run.metrics])


def _quality(run: RunData, cell_id: str, names: dict[tuple, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in run.metrics_by_cell.get(cell_id, []):
        name = names[(m["metric"], m["embedder"], m["embedder_id"], m["reference_id"])]
        out.update({name: m["value"], f"{name}:ci_low": m["ci_low"], f"{name}:ci_high": m["ci_high"],
                    f"{name}:n": m["n"]})
    return out


def quality_columns(frame: pd.DataFrame) -> list[str]:
    """The point-value quality columns of a cell frame (no CI or n columns)."""
    return [c for c in frame.columns
            if c.count(":") == 1 and is_quality_metric(c.split(":")[0])]
