"""`history report`: index.html (one plot per figure over commits), summary.md, series.csv/.parquet.

The page follows ``report``'s conventions: one self-contained file (inline CSS, plots as inline
PNG data URIs drawn with matplotlib's Agg backend, no script, no network), so it works from
file:// and can be kept as a CI artifact; every user string is escaped by jinja2's autoescape.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.history.changepoints import DEFAULT_MIN_SIZE, DEFAULT_PENALTY
from harness.history.series import SeriesStep, analyse, recent
from harness.history.store import HistoryError, HistoryStore

FORMATS = ("html", "md", "csv", "parquet")
FILES = {"html": "index.html", "md": "summary.md", "csv": "series.csv", "parquet": "series.parquet"}
# stem, embedder_id and reference_id say what a series measured; run_figure, what the run called it.
SERIES_COLUMNS = ["position", "commit_sha", "date", "commit_time_source", "cell_key", "cell_label", "figure",
                  "stem", "embedder_id", "reference_id", "run_figure", "unit", "better", "scale", "runs", "value",
                  "ci_low", "ci_high", "confidence", "n", "se", "level", "step", "environment_change", "env_key",
                  "source", "run_key"]


@dataclass
class HistoryReport:
    """What ``build_history_report`` wrote and found."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    steps: list[SeriesStep] = field(default_factory=list)
    recent_steps: list[SeriesStep] = field(default_factory=list)


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"html,md"`` or a sequence -> validated format names."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise HistoryError(f"history report formats {bad or 'none'}: allowed {', '.join(FORMATS)}")
    return tuple(names)


def build_history_report(history: str | Path | None, out_dir: str | Path, formats: str | Sequence[str] = FORMATS,
                         last: int = 20, penalty: float = DEFAULT_PENALTY, min_size: int = DEFAULT_MIN_SIZE,
                         figures: Sequence[str] | None = None, progress: bool = True) -> HistoryReport:
    """Analyse a history file and write its report folder."""
    formats = parse_formats(formats)
    if last < 1:
        raise HistoryError(f"--last must be >= 1 commit, got {last}")
    if penalty <= 0 or min_size < 1:
        raise HistoryError(f"--penalty must be > 0 and --min-size >= 1 (got {penalty}, {min_size})")
    with HistoryStore(history, create=False) as store:
        frame, runs = store.frame(), store.runs()
        path = store.path
    if figures:
        frame = frame[frame["figure"].apply(lambda f: any(f.startswith(p) for p in figures))]
    if frame.empty:
        raise HistoryError(f"{path}: no figures{' matching ' + ', '.join(figures) if figures else ''} to report")
    frame, steps = analyse(frame, penalty, min_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = HistoryReport(out, steps=steps, recent_steps=recent(steps, frame, last))
    series = frame[SERIES_COLUMNS]
    if "csv" in formats:
        series.to_csv(out / FILES["csv"], index=False)
    if "parquet" in formats:
        series.to_parquet(out / FILES["parquet"], index=False)
    if "md" in formats:
        (out / FILES["md"]).write_text(markdown_summary(result.recent_steps, frame, last), encoding="utf-8")
    if "html" in formats:
        (out / FILES["html"]).write_text(_html(frame, steps, runs, path, last, penalty, min_size, formats, progress),
                                         encoding="utf-8")
    result.files = {f: out / FILES[f] for f in formats}
    return result


# ---- text ------------------------------------------------------------------------------------

def step_size_text(step: SeriesStep) -> str:
    """``+12.3% [+9.1%, +15.6%]`` (relative) or ``+0.0123 [...]`` (difference)."""
    if step.relative:
        return f"{step.size:+.1%} [{step.ci_low:+.1%}, {step.ci_high:+.1%}]"
    return f"{step.size:+.4g} [{step.ci_low:+.4g}, {step.ci_high:+.4g}]"


def _md(text: Any) -> str:
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def markdown_summary(steps: Sequence[SeriesStep], frame: pd.DataFrame, last: int) -> str:
    """Steps among the last ``last`` commits, as a Markdown table for a pull-request comment."""
    commits = frame["commit_sha"].nunique()
    series = frame.groupby(["cell_key", "figure", "unit"]).ngroups
    lines = [f"## History: steps in the last {min(last, commits)} of {commits} commits", ""]
    if not steps:
        return "\n".join([*lines, f"No steps in {series} series.", ""])
    lines += ["| figure | cell | commit | before → after | change [95% CI] | kind |", "|---|---|---|---:|---:|---|"]
    for s in sorted(steps, key=lambda s: (s.kind != "regression", -s.position, s.figure)):
        kind = f"environment: {s.environment_change}" if s.kind == "environment" else s.kind
        lines.append(f"| {_md(s.figure)} | {_md(s.cell_label)} | `{_md(s.commit[:10])}` (after `{_md(s.previous_commit[:10])}`) "
                     f"| {s.before:.4g} → {s.after:.4g} {_md(s.unit)} | {step_size_text(s)} | "
                     f"{'**regression**' if s.kind == 'regression' else _md(kind)} |")
    lines += ["", (f"{len(steps)} step(s) in {series} series; method: penalised segmentation weighted by each "
                   "point's own uncertainty (`audioldm2-harness history report`).")]
    return "\n".join(lines) + "\n"


# ---- HTML ------------------------------------------------------------------------------------

def _html(frame: pd.DataFrame, steps: list[SeriesStep], runs: list[dict[str, Any]], path: Path, last: int,
          penalty: float, min_size: int, formats: Sequence[str], progress: bool = True) -> str:
    from harness.report.build import fmt

    commits = list(dict.fromkeys(frame.sort_values("position")["commit_sha"]))
    newest = len(commits) - 1
    sections = _sections(frame, steps, commits, progress)
    context = {
        "title": f"AudioLDM 2 history: {path.name}",
        "source": str(path.resolve()), "n_commits": len(commits), "last": last,
        "steps": [{**asdict(s), "size_text": step_size_text(s), "recent": s.position > newest - last, "anchor": anchor(s.figure),
                   "before_text": fmt(s.before), "after_text": fmt(s.after)}
                  for s in sorted(steps, key=lambda s: (-s.position, s.figure, s.cell_label))],
        "runs": [{**r, "date": pd.to_datetime(r["commit_time"], unit="s", utc=True).strftime("%Y-%m-%d %H:%M"),
                  "env": ", ".join(f"{k} {v}" for k, v in json.loads(r["env_key"]).items())} for r in runs],
        "sections": sections, "penalty": penalty, "min_size": min_size,
        "downloads": [FILES[f] for f in formats if f != "html"],
    }
    return _template().render(**context)


def _sections(frame: pd.DataFrame, steps: list[SeriesStep], commits: list[str], progress: bool) -> list[dict]:
    """One section per figure, one plot per (cell, unit) series in it."""
    from tqdm.auto import tqdm

    # A sweep of many cells makes hundreds of plots (about 0.1 s each): show progress past a few dozen.
    n_series = frame.groupby(["cell_key", "figure", "unit"]).ngroups
    bar = tqdm(total=n_series, desc="history plots", unit="plot", disable=not progress or n_series < 50,
               dynamic_ncols=True)
    sections = []
    for figure, part in sorted(frame.groupby("figure"), key=lambda item: figure_order(item[0])):
        plots = []
        for (cell_key, unit), series in part.groupby(["cell_key", "unit"], sort=True):
            series_steps = [s for s in steps if (s.cell_key, s.figure, s.unit) == (cell_key, figure, unit)]
            label = series["cell_label"].iloc[-1] + (f" ({unit})" if unit else "")
            plots.append({"label": label, "cell_key": cell_key, "src": plot_series(series, series_steps, commits),
                          "steps": len(series_steps), "points": len(series)})
            bar.update()
        sections.append({"figure": figure, "id": anchor(figure), "plots": plots})
    bar.close()
    return sections


def figure_order(figure: str) -> tuple[int, str]:
    """Page order: total latency, stage latencies, memory, quality, then failed/flagged fractions."""
    rank = (0 if figure.startswith("latency_ms:total") else 1 if figure.startswith("latency_ms") else
            2 if figure.startswith("memory") else 4 if figure.endswith("_fraction") else 3)
    return rank, figure


def anchor(figure: str) -> str:
    """The page's element id of a figure's section."""
    return "fig-" + "".join(c if c.isalnum() else "-" for c in figure)


def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("harness.history", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("history.html.j2")


def plot_series(series: pd.DataFrame, steps: Sequence[SeriesStep], commits: Sequence[str]) -> str:
    """One series as an inline PNG data URI: points with CIs, segment levels, steps, environments shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = series["position"].to_numpy(float)
    y = series["value"].to_numpy(float)
    low, high = _intervals(series)
    fig, ax = plt.subplots(figsize=(9, 2.8), dpi=90)
    try:
        _shade_environments(ax, series)
        ax.errorbar(x, y, yerr=[y - low, high - y], fmt="o", ms=4, color="#1f4e9c", ecolor="#7a9bd1",
                    capsize=2, lw=1, label="value and its CI")
        ax.step(x, series["level"].to_numpy(float), where="mid", color="#e07b00", lw=1.5, label="segment level")
        for s in steps:
            ax.axvline(s.position - 0.5, color="#c0392b" if s.kind == "regression" else "#555", ls="--", lw=1)
            ax.annotate(f"{s.size:+.1%}" if s.relative else f"{s.size:+.3g}", (s.position - 0.5, 1),
                        xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=8,
                        color="#c0392b" if s.kind == "regression" else "#333")
        _commit_ticks(ax, commits)
        ax.set_ylabel(str(series["unit"].iloc[0]) or str(series["figure"].iloc[0]).split(":")[0], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _intervals(series: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A point's stored CI where it has one, else value +/- 1.96 SE (the point's own uncertainty)."""
    y, se = series["value"].to_numpy(float), series["se"].to_numpy(float)
    low, high = np.array(series["ci_low"], dtype=float), np.array(series["ci_high"], dtype=float)
    missing = ~(np.isfinite(low) & np.isfinite(high))
    low[missing], high[missing] = y[missing] - 1.96 * se[missing], y[missing] + 1.96 * se[missing]
    return np.minimum(low, y), np.maximum(high, y)


def _shade_environments(ax: Any, series: pd.DataFrame) -> None:
    """Alternate shading for each run of points measured in one environment; changes labelled."""
    x = series["position"].to_numpy(float)
    changes = [i for i, c in enumerate(series["environment_change"]) if c]
    bounds = [0, *changes, len(x)]
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        if k % 2 == 1:
            ax.axvspan(x[a] - 0.5, x[b - 1] + 0.5, color="#d9d9d9", alpha=0.6, lw=0)
    for i in changes:
        text = series["environment_change"].iloc[i]
        ax.annotate(text if len(text) < 60 else text[:57] + "...", (x[i] - 0.45, 0.02),
                    xycoords=("data", "axes fraction"), fontsize=6, color="#555", rotation=90, va="bottom")


def _commit_ticks(ax: Any, commits: Sequence[str]) -> None:
    every = max(1, math.ceil(len(commits) / 40))
    ticks = list(range(0, len(commits), every))
    ax.set_xticks(ticks)
    ax.set_xticklabels([commits[i][:7] for i in ticks], rotation=90, fontsize=6, family="monospace")
    ax.set_xlim(-0.7, len(commits) - 0.3)
