"""Run summaries: the figures a gate compares, with what it needs to judge significance.

A summary is built from run folders (``from_runs``) or from pytest-benchmark JSON
(``from_benchmark_json``), and saved as a baseline file (``save``/``load``). Each figure keeps
its raw observations where there are any (per-call latencies, per-sample CLAP scores, keyed so
that two summaries of the same prompts and seeds can be compared pair by pair) or its
confidence interval (set-level metrics such as FAD), so the gate tests whether a change is
real instead of comparing two numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from harness.environment import environment_key
from harness.errors import HarnessError
from harness.results import (
    STAGES, TOTAL, RunData, cell_label, cell_latency, config_key, higher_is_better, load_run, quality_names,
)

SCHEMA = 1
Better = Literal["lower", "higher"]


class SummaryError(HarnessError, ValueError):
    """A baseline or benchmark file that cannot be read; the message says which and why."""


@dataclass
class Figure:
    """One number of one cell, with what is known of its uncertainty."""

    value: float | None
    better: Better | None
    unit: str = ""
    scale: Literal["ratio", "difference"] = "difference"  # how a change is measured
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    confidence: float | None = None
    std: float | None = None  # standard deviation of the observations, when only that is known
    run_values: list[float] | None = None  # the figure in each of several runs of the same cell
    samples: list[float] | None = None  # raw observations
    keys: list[str] | None = None  # one per sample: equal keys in two summaries pair them
    reference_id: str | None = None  # quality figures: what they were measured against
    embedder_id: str | None = None  # quality figures: which weights and front end measured them


@dataclass
class CellSummary:
    """The figures of one cell, keyed by figure name."""

    label: str
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass
class Summary:
    """Figures of every cell of one or more runs, and the environment they were measured in."""

    source: str
    environment: dict[str, Any]
    cells: dict[str, CellSummary] = field(default_factory=dict)  # keyed by config key

    def environment_key(self) -> dict[str, Any]:
        """What must match for two summaries to be comparable: device model and library versions."""
        return environment_key(self.environment)


def from_runs(run_dirs: Sequence[str | Path]) -> Summary:
    """Summarize run folders; a cell present in several of them gets its per-run values kept.

    Timings drift between runs (machine state, neighbours on a shared runner) by more than
    their spread within one run, so a baseline of several runs lets the gate judge a
    candidate against the run-to-run variation instead of the within-run one.
    """
    runs = [load_run(d) for d in run_dirs]
    summary = Summary(",".join(str(d) for d in run_dirs), runs[0].environment)
    for run in runs[1:]:
        other = Summary(str(run.path), run.environment).environment_key()
        if other != summary.environment_key():
            raise SummaryError(f"{run.path} was measured in another environment ({other}) than {runs[0].path} "
                               f"({summary.environment_key()}); a baseline pools runs of one environment")
    per_run: dict[str, list[CellSummary]] = {}
    for run in runs:
        for cell in run.cells:
            per_run.setdefault(config_key(cell), []).append(CellSummary(cell_label(cell), _cell_figures(run, cell)))
    for key, versions in per_run.items():
        summary.cells[key] = versions[-1] if len(versions) == 1 else _pool(versions)
    return summary


def _pool(versions: list[CellSummary]) -> CellSummary:
    """One cell from several runs: latency and memory keep each run's value; the rest, the last run's."""
    pooled = CellSummary(versions[-1].label, dict(versions[-1].figures))
    for name, fig in pooled.figures.items():
        if fig.scale != "ratio":
            continue
        values = [v.figures[name].value for v in versions if name in v.figures]
        samples = [x for v in versions if name in v.figures for x in (v.figures[name].samples or [])]
        pooled.figures[name] = replace(fig, value=float(np.median(values)), run_values=values,
                                       samples=samples or None, n=len(samples) or fig.n)
    return pooled


def _cell_figures(run: RunData, cell: dict[str, Any]) -> dict[str, Figure]:
    figures = _latency_figures(run, cell["id"])
    figures.update(_count_figures(run, cell["id"]))
    figures.update(_memory_figures(run, cell["id"]))
    figures.update(_quality_figures(run, cell["id"]))
    return figures


def _latency_figures(run: RunData, cell_id: str) -> dict[str, Figure]:
    out = {}
    for stage in (TOTAL, *STAGES):
        lat = cell_latency(run, cell_id, stage)
        if lat is not None:
            ms = [float(v) * 1e3 for v in lat.seconds] or None  # none: an old bench's medians only
            out[f"latency_ms:{stage}:p50"] = Figure(lat.p50 * 1e3, "lower", lat.unit, "ratio",
                                                    len(ms) if ms else None, samples=ms)
    return out


def _count_figures(run: RunData, cell_id: str) -> dict[str, Figure]:
    rows = run.samples_by_cell.get(cell_id, [])
    if not rows:
        return {}
    failed = [1.0 if s["status"] != "ok" else 0.0 for s in rows]
    flagged = [1.0 if s["status"] == "ok" and json.loads(s["flags"]) else 0.0 for s in rows]
    keys = [f"{s['prompt_id']}|{s['seed']}" for s in rows]
    return {
        "failed_fraction": Figure(float(np.mean(failed)), "lower", "", "difference", len(rows), samples=failed, keys=keys),
        "flagged_fraction": Figure(float(np.mean(flagged)), "lower", "", "difference", len(rows), samples=flagged, keys=keys),
    }


def _memory_figures(run: RunData, cell_id: str) -> dict[str, Figure]:
    rows = [m for m in run.measurements_by_cell.get(cell_id, []) if m["kind"] == "memory" and m["stage"] == TOTAL]
    if not rows:
        return {}
    smallest = min(m["batch_size"] for m in rows)
    return {f"memory_mib:total:{m['metric'].removesuffix('_bytes')}": Figure(m["value"] / 2**20, "lower", "MiB", "ratio")
            for m in rows if m["batch_size"] == smallest}


def _quality_figures(run: RunData, cell_id: str) -> dict[str, Figure]:
    rows = [m for m in run.metrics_by_cell.get(cell_id, []) if m["value"] is not None]
    names = quality_names(rows)
    out = {}
    for m in rows:
        better: Better = "higher" if higher_is_better(m["metric"]) else "lower"
        per_sample = m["details"].get("per_sample") or []
        out[names[(m["metric"], m["embedder"], m["embedder_id"], m["reference_id"])]] = Figure(
            m["value"], better, "", "difference", m["n"], m["ci_low"], m["ci_high"], m["confidence"],
            samples=[float(s) for _, _, s in per_sample] or None,
            keys=[f"{p}|{seed}" for p, seed, _ in per_sample] or None,
            reference_id=m["reference_id"], embedder_id=m["embedder_id"],
        )
    return out


def from_benchmark_json(path: str | Path) -> Summary:
    """Summarize a ``pytest --benchmark-json`` file: one cell per benchmark."""
    data = _read_json(path)
    if "benchmarks" not in data or "machine_info" not in data:
        raise SummaryError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks'/'machine_info')")
    machine = data["machine_info"]
    env = {"cpu": (machine.get("cpu") or {}).get("brand_raw", machine.get("processor", "?")),
           "versions": {"python": machine.get("python_version")}, "pytest_benchmark": True}
    summary = Summary(str(path), env)
    for bench in data["benchmarks"]:
        summary.cells[bench["fullname"]] = CellSummary(bench["name"], _benchmark_figures(bench))
    return summary


def _benchmark_figures(bench: dict[str, Any]) -> dict[str, Figure]:
    stats = bench["stats"]
    data = stats.get("data")  # present only with --benchmark-save-data
    out = {
        "benchmark:median_s": Figure(stats["median"], "lower", "s", "ratio", stats["rounds"],
                                     samples=[float(v) for v in data] if data else None),
        # Without saved data the mean and its spread still allow a Welch test.
        "benchmark:mean_s": Figure(stats["mean"], "lower", "s", "ratio", stats["rounds"], std=stats["stddev"]),
    }
    for key, value in (bench.get("extra_info") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            out[f"extra:{key}"] = Figure(float(value), None)  # direction comes from the policy rule
    return out


def save(summary: Summary, path: str | Path) -> Path:
    """Write a summary as a baseline JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": SCHEMA, "kind": "audioldm2-harness baseline", "source": summary.source,
               "environment": summary.environment,
               "cells": {k: {"label": c.label, "figures": {n: asdict(f) for n, f in c.figures.items()}}
                         for k, c in summary.cells.items()}}
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def load(path: str | Path) -> Summary:
    """Read a baseline file written by ``save``, a run folder, or pytest-benchmark JSON."""
    path = Path(path)
    if path.is_dir():
        return from_runs([path])
    data = _read_json(path)
    if "benchmarks" in data:
        return from_benchmark_json(path)
    if data.get("kind") != "audioldm2-harness baseline" or data.get("schema") != SCHEMA:
        raise SummaryError(f"{path}: not an audioldm2-harness baseline (schema {SCHEMA}); "
                           "write one with `audioldm2-harness baseline save RUN`")
    summary = Summary(data["source"], data["environment"])
    for key, cell in data["cells"].items():
        summary.cells[key] = CellSummary(cell["label"], {n: Figure(**f) for n, f in cell["figures"].items()})
    return summary


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SummaryError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise SummaryError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise SummaryError(f"{path}: expected a JSON object")
    return data
