"""Run summaries: the figures a gate compares, with what it needs to judge significance.

A summary is built from run folders (``from_runs``) or from pytest-benchmark JSON
(``from_benchmark_json``), and saved as a baseline file (``save``/``load``). Each figure keeps
its raw observations where there are any (per-call latencies, per-sample CLAP scores, keyed so
that two summaries of the same prompts and seeds can be compared pair by pair) or its
confidence interval (set-level metrics such as FAD), so the gate tests whether a change is
real instead of comparing two numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from harness.environment import environment_key
from harness.errors import HarnessError
from harness.validation import first_error, tree_problem
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


def from_benchmark_json(path: str | Path, data: dict[str, Any] | None = None) -> Summary:
    """Summarize a ``pytest --benchmark-json`` file: one cell per benchmark."""
    parsed = _validate(_BenchmarkFile, _read_json(path) if data is None else data, path)
    if not parsed.benchmarks:
        raise SummaryError(f"{path}: 'benchmarks' is empty: nothing to gate; run pytest with --benchmark-json "
                           "on at least one benchmark")
    machine = parsed.machine_info
    env = {"cpu": (machine.cpu or {}).get("brand_raw", machine.processor or "?"),
           "versions": {"python": machine.python_version}, "pytest_benchmark": True}
    summary = Summary(str(path), env)
    for bench in parsed.benchmarks:
        summary.cells[bench.fullname] = CellSummary(bench.name, _benchmark_figures(bench))
    return summary


def _benchmark_figures(bench: "_Benchmark") -> dict[str, Figure]:
    stats = bench.stats
    data = stats.data  # present only with --benchmark-save-data
    out = {
        "benchmark:median_s": Figure(stats.median, "lower", "s", "ratio", stats.rounds,
                                     samples=list(data) if data else None),
        # Without saved data the mean and its spread still allow a Welch test.
        "benchmark:mean_s": Figure(stats.mean, "lower", "s", "ratio", stats.rounds, std=stats.stddev),
    }
    for key, value in (bench.extra_info or {}).items():
        # Numbers only (labels and nested info are not figures); a NaN or inf one is kept, so
        # that the gate says it cannot compare it instead of dropping it.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"extra:{key}"] = Figure(float(value), None)  # direction comes from the policy rule
    return out


def save(summary: Summary, path: str | Path) -> Path:
    """Write a summary as a baseline JSON file; a summary with no figures is refused (it would gate nothing)."""
    _require_figures(summary, summary.source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"schema": SCHEMA, "kind": "audioldm2-harness baseline", "source": summary.source,
               "environment": summary.environment,
               "cells": {k: {"label": c.label, "figures": {n: asdict(f) for n, f in c.figures.items()}}
                         for k, c in summary.cells.items()}}
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def load(path: str | Path) -> Summary:
    """Read a baseline file written by ``save``, a run folder, or pytest-benchmark JSON.

    Files are validated against their schema (strict types, no unknown keys in a baseline);
    anything else is a one-line ``SummaryError`` naming the file and the key. A summary with no
    figures is an error too: a gate against it would pass on nothing.
    """
    path = Path(path)
    if path.is_dir():
        return _require_figures(from_runs([path]), path)
    data = _read_json(path)
    if "benchmarks" in data:
        return _require_figures(from_benchmark_json(path, data), path)
    if data.get("kind") != "audioldm2-harness baseline" or data.get("schema") != SCHEMA:
        raise SummaryError(f"{path}: not an audioldm2-harness baseline (schema {SCHEMA}); "
                           "write one with `audioldm2-harness baseline save RUN`")
    parsed = _validate(_BaselineFile, data, path)
    summary = Summary(parsed.source, data["environment"])
    for key, cell in parsed.cells.items():
        summary.cells[key] = CellSummary(cell.label, {n: Figure(**f.model_dump()) for n, f in cell.figures.items()})
    return _require_figures(summary, path)


def _require_figures(summary: Summary, path: str | Path) -> Summary:
    if not any(c.figures for c in summary.cells.values()):
        raise SummaryError(f"{path}: holds no figures ({len(summary.cells)} cells); a gate against it would pass "
                           "on nothing: save the baseline from a run that was benchmarked or scored")
    return summary


def non_finite(fig: Figure) -> str:
    """The first field of ``fig`` holding NaN or inf ('' when all are finite): such a figure cannot be compared."""
    for name in ("value", "ci_low", "ci_high", "std", "confidence"):
        value = getattr(fig, name)
        if value is not None and not math.isfinite(value):
            return f"{name} = {value}"
    for name in ("samples", "run_values"):
        values = getattr(fig, name)
        if values is not None and not np.isfinite(np.asarray(values, dtype=float)).all():
            return f"{name} holds NaN or inf"
    return ""


# --- file schemas: what a baseline and a pytest-benchmark file must hold ----------------------

_FILE = ConfigDict(strict=True, extra="forbid")
_FOREIGN = ConfigDict(strict=True, extra="ignore")  # pytest-benchmark's own files carry much more


def _figure_model() -> type[BaseModel]:
    # Built from Figure's own fields, so the file schema cannot drift from the dataclass.
    hints = typing.get_type_hints(Figure)
    fields = {f.name: (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
              for f in dataclasses.fields(Figure)}
    return create_model("FigureFile", __config__=_FILE, **fields)


_FigureFile = _figure_model()


class _CellFile(BaseModel):
    model_config = _FILE

    label: str
    figures: dict[str, _FigureFile]  # type: ignore[valid-type]


class _EnvironmentFile(BaseModel):
    # Only what environment_key reads is typed; the rest is free-form (GPU details, git state...).
    model_config = ConfigDict(strict=True, extra="allow")

    versions: dict[str, str | None] = Field(default_factory=dict)
    gpu: str | None = None
    cpu: str | None = None
    cuda_available: bool | None = None


class _BaselineFile(BaseModel):
    model_config = _FILE

    schema_: int = Field(alias="schema")
    kind: str
    source: str
    environment: _EnvironmentFile
    cells: dict[str, _CellFile]


class _BenchmarkStats(BaseModel):
    model_config = _FOREIGN

    median: float
    mean: float
    stddev: float = Field(ge=0)
    rounds: int = Field(ge=1)
    data: list[float] | None = None


class _Benchmark(BaseModel):
    model_config = _FOREIGN

    name: str
    fullname: str
    stats: _BenchmarkStats
    extra_info: dict[str, Any] | None = None


class _MachineInfo(BaseModel):
    model_config = _FOREIGN

    cpu: dict[str, Any] | None = None
    processor: str | None = None
    python_version: str | None = None


class _BenchmarkFile(BaseModel):
    model_config = _FOREIGN

    machine_info: _MachineInfo
    benchmarks: list[_Benchmark]


def _validate(model: type[BaseModel], data: dict[str, Any], path: str | Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise SummaryError(f"{path}: {first_error(err)}") from None


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise SummaryError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise SummaryError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise SummaryError(f"{path}: not JSON ({err})") from None
    except RecursionError:
        raise SummaryError(f"{path}: nested deeper than a JSON reader can follow; not a baseline or "
                           "pytest-benchmark file") from None
    if not isinstance(data, dict):
        raise SummaryError(f"{path}: expected a JSON object")
    # NaN and inf are allowed here: a figure holding one is judged "cannot compare", not dropped.
    problem = tree_problem(data, finite=False)
    if problem:
        raise SummaryError(f"{path}: {problem}")
    return data
