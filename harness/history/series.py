"""The series of a history (one per cell and measured figure) and their steps, named by commit.

A series is keyed by what was measured: the cell, the figure's stem, the embedder and reference
ids of a quality figure, and the unit (``HistoryStore.frame``), never by the name one run gave it:
that name depends on the run's other rows, and two embedders' weights may share it.

Each point's standard error comes from what the run stored (``changepoints.point_se``); steps
come from ``changepoints.detect``. A step where the environment changed (another GPU or CPU
model, another torch/diffusers/transformers version) is reported as an environment change, not
as a regression or an improvement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.history.changepoints import (
    DEFAULT_MIN_SIZE,
    DEFAULT_PENALTY,
    detect,
    point_se,
    segment_levels,
)

FRACTIONS = ("failed_fraction", "flagged_fraction")
# ``figure`` is in the key although the ids determine it: a quality point added before ids were
# stored has none, and only its name tells it apart.
SERIES_KEY = ["cell_key", "stem", "embedder_id", "reference_id", "figure", "unit"]


@dataclass(frozen=True)
class SeriesStep:
    """A detected step of one (cell, figure) series."""

    cell_key: str
    cell_label: str
    figure: str
    unit: str
    commit: str  # first commit after the step
    previous_commit: str  # last commit before it
    date: str
    position: int  # index of the commit in the whole history (0 = oldest)
    before: float
    after: float
    size: float  # relative change (ratio-scale figures) or difference
    ci_low: float
    ci_high: float
    relative: bool
    kind: str  # regression | improvement | change (no direction known) | environment
    environment_change: str  # e.g. "torch 2.13.0 → 2.14.0"; empty when the environment stayed
    embedder_id: str | None = None  # quality figures: what measured the series
    reference_id: str | None = None


def analyse(frame: pd.DataFrame, penalty: float = DEFAULT_PENALTY, min_size: int = DEFAULT_MIN_SIZE,
            confidence: float = 0.95) -> tuple[pd.DataFrame, list[SeriesStep]]:
    """Per-point ``se``, ``level`` (segment mean), ``step`` and ``environment_change`` columns, and the steps."""
    if frame.empty:
        return frame.assign(se=[], level=[], step=[], environment_change=[], position=[]), []
    positions = {c: i for i, c in enumerate(dict.fromkeys(frame["commit_sha"]))}
    parts, steps = [], []
    # The unit is part of a series: per-sample run timings and per-call bench timings never mix.
    # dropna=False: latency, memory and fractions have no embedder or reference id.
    for (cell_key, _, _, _, figure, _), part in frame.groupby(SERIES_KEY, sort=False, dropna=False):
        part = part.copy()
        part["position"] = part["commit_sha"].map(positions)
        part["se"] = [_se(row) for row in part.itertuples()]
        # Ratio-scale figures are compared as ratios (log scale), which needs positive values throughout.
        relative = part["scale"].iloc[0] == "ratio" and bool((part["value"] > 0).all())
        part = one_point_per_commit(part, relative)
        part["environment_change"] = _environment_changes(part["env_key"].tolist())
        found, tau = detect(part["value"].to_numpy(), part["se"].to_numpy(), relative, penalty, min_size, confidence)
        part["level"] = segment_levels(part["value"], part["se"], found, relative, tau)
        part["step"] = False
        for st in found:
            part.iloc[st.index, part.columns.get_loc("step")] = True
            steps.append(_series_step(part, st, cell_key, figure))
        parts.append(part)
    return pd.concat(parts).sort_values(["position", "cell_key", "figure"], kind="stable"), steps


def one_point_per_commit(part: pd.DataFrame, relative: bool) -> pd.DataFrame:
    """Runs of one commit (in one environment) pooled into one point, so a step always lies between
    commits: the mean (geometric on the ratio scale) with the larger of two standard errors, the
    one the runs' own SEs give and the one their spread gives. ``runs`` counts the runs pooled."""
    part = part.assign(runs=1)
    if not part.duplicated(["commit_sha", "env_key"]).any():
        return part
    rows = []
    for _, group in part.groupby(["commit_sha", "env_key"], sort=False):
        row = group.iloc[-1].copy()
        if len(group) > 1:
            k, v, se = len(group), group["value"].to_numpy(float), group["se"].to_numpy(float)
            x, s = (np.log(v), se / v) if relative else (v, se)
            mean, pooled = x.mean(), max(np.sqrt(np.sum(s**2)) / k, x.std(ddof=1) / np.sqrt(k))
            row["value"] = np.exp(mean) if relative else mean
            row["se"] = pooled * row["value"] if relative else pooled
            row[["ci_low", "ci_high", "observations"]] = [np.nan, np.nan, None]  # the pooled point has its SE
            row["runs"] = k
        rows.append(row)
    return pd.DataFrame(rows)


def _se(row: Any) -> float:
    observations = json.loads(row.observations) if isinstance(row.observations, str) else None
    n = None if pd.isna(row.n) else int(row.n)
    return point_se(row.value, samples=observations, ci_low=_num(row.ci_low), ci_high=_num(row.ci_high),
                    confidence=_num(row.confidence), n=n, fraction=row.figure in FRACTIONS)


def _num(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _environment_changes(keys: list[str]) -> list[str]:
    """For each point, what changed in the environment since the previous point ('' if nothing)."""
    out = [""]
    for before, after in zip(keys, keys[1:]):
        out.append(describe_change(json.loads(before), json.loads(after)) if before != after else "")
    return out


def describe_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``"torch 2.13.0 → 2.14.0; device A → B"``: the keys that differ, in order."""
    return "; ".join(f"{k} {before.get(k)} → {after.get(k)}"
                     for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k))


def _series_step(part: pd.DataFrame, st: Any, cell_key: str, figure: str) -> SeriesStep:
    row, prev = part.iloc[st.index], part.iloc[st.index - 1]
    env = row["environment_change"]
    better = row["better"]
    if env:
        kind = "environment"
    elif better in ("lower", "higher"):
        worse = st.size > 0 if better == "lower" else st.size < 0
        kind = "regression" if worse else "improvement"
    else:
        kind = "change"
    return SeriesStep(cell_key, row["cell_label"], figure, row["unit"], row["commit_sha"], prev["commit_sha"],
                      row["date"], int(row["position"]), st.before, st.after, st.size, st.ci_low, st.ci_high,
                      st.relative, kind, env, _id(row["embedder_id"]), _id(row["reference_id"]))


def _id(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def recent(steps: list[SeriesStep], frame: pd.DataFrame, last: int) -> list[SeriesStep]:
    """Steps whose first commit is among the ``last`` commits of the history."""
    if frame.empty:
        return []
    newest = int(np.max(frame["position"]))
    return [s for s in steps if s.position > newest - last]
