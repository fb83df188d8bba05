"""Report figures as PNG files: latency vs quality with Pareto fronts, quality vs steps,
stage latencies and memory. Built on ``matplotlib.figure.Figure`` (Agg), never pyplot, so no
display or global state is touched.

Every function takes a cell frame and a folder and returns the written path, or None when the
frame lacks the columns the figure needs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from harness.results import STAGES, TOTAL, higher_is_better, quality_columns

# Display names of the metrics (directions come from the metric registry: results.higher_is_better).
METRIC_NAMES = {"fad": "FAD", "kad": "KAD", "clap_score": "CLAP score", "kl_softmax": "KL (softmax)",
                "kl_sigmoid": "KL (sigmoid)", "inception_score": "Inception Score",
                "wer": "WER", "cer": "CER"}
SPEECH_METRICS = ("wer", "cer")
MEMORY_KINDS = {
    "rss_peak": "peak RSS (MiB)", "allocated_peak": "peak allocated (MiB)",
    "reserved_peak": "peak reserved (MiB)", "nvml_used": "NVML used (MiB)", "weights": "weights (MiB)",
    "rss_growth": "RSS growth over the stage's start (MiB)",
    "rss_peak_since_start": "peak RSS since process start (MiB)", "rss_delta": "RSS change over the stage (MiB)",
}
LATENCY = f"latency_ms:{TOTAL}:p50"
_SAVE = {"dpi": 110, "metadata": {"Software": None}, "bbox_inches": "tight"}


def pareto_front(x: Sequence[float], y: Sequence[float], higher_y_better: bool = False) -> list[int]:
    """Indices of the non-dominated points (lower x better; lower y unless ``higher_y_better``), by x.

    A point is dominated when another is at least as good on both axes and better on one;
    points with a non-finite coordinate are never on the front.
    """
    xs = np.asarray(x, dtype=float)
    ys = -np.asarray(y, dtype=float) if higher_y_better else np.asarray(y, dtype=float)
    finite = [i for i in range(len(xs)) if math.isfinite(xs[i]) and math.isfinite(ys[i])]
    front = []
    for i in finite:
        dominated = any(xs[j] <= xs[i] and ys[j] <= ys[i] and (xs[j] < xs[i] or ys[j] < ys[i]) for j in finite)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (xs[i], ys[i]))


def metric_title(column: str) -> str:
    """Readable name of a quality column, e.g. ``fad:clap`` -> ``FAD (clap)``."""
    metric, embedder = column.split(":", 1)
    better = "higher" if higher_is_better(metric) else "lower"
    return f"{METRIC_NAMES.get(metric, metric)} ({embedder}), {better} is better"


def cell_names(frame: pd.DataFrame) -> list[str]:
    """One display name per row: the cell label, prefixed by the run when there are several runs."""
    multi = frame["run"].nunique() > 1
    return [f"{r}: {lab}" if multi else lab for r, lab in zip(frame["run"], frame["label"])]


def _groups(frame: pd.DataFrame) -> pd.Series:
    """Colour group per row: the checkpoint (its folder name), with the run when there are several."""
    names = frame["checkpoint"].map(lambda c: Path(str(c)).name)
    return frame["run"] + ": " + names if frame["run"].nunique() > 1 else names


def _colours(keys: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]  # first-seen order, so a stage keeps its colour in every figure
    return {k: cmap(i % 10) for i, k in enumerate(dict.fromkeys(keys))}


def _save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / name
    fig.savefig(path, **_SAVE)
    return path


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any()


def latency_quality_plot(frame: pd.DataFrame, out_dir: str | Path) -> Path | None:
    """Total p50 latency against each FAD and CLAP-score column, with a Pareto front per checkpoint."""
    columns = [c for c in quality_columns(frame) if c.split(":")[0] in ("fad", "clap_score") and _has(frame, c)]
    if not columns or not _has(frame, LATENCY):
        return None
    fig = Figure(figsize=(5.2 * min(len(columns), 3), 4.2 * math.ceil(len(columns) / 3)), layout="constrained")
    groups = _groups(frame)
    colours = _colours(sorted(set(groups)))
    for k, column in enumerate(columns):
        ax = fig.add_subplot(math.ceil(len(columns) / 3), min(len(columns), 3), k + 1)
        higher = higher_is_better(column.split(":")[0])
        for group in sorted(set(groups)):
            part = frame[groups == group]
            x, y = part[LATENCY].to_numpy(float), part[column].to_numpy(float)
            ax.scatter(x, y, color=colours[group], label=group, zorder=3)
            front = pareto_front(x, y, higher_y_better=higher)
            ax.step(x[front], y[front], where="post", color=colours[group], alpha=0.6)
            ax.scatter(x[front], y[front], s=130, facecolors="none", edgecolors=colours[group], zorder=2)
        ax.set_xlabel("latency, total p50 (ms)")
        ax.set_ylabel(metric_title(column).split(",")[0])
        ax.set_title(metric_title(column), fontsize=9)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8, title="checkpoint (ring, line: Pareto front)", title_fontsize=8)
    fig.suptitle("Latency against quality, one point per cell")
    return _save(fig, out_dir, "latency_quality.png")


def quality_steps_plot(frame: pd.DataFrame, out_dir: str | Path) -> Path | None:
    """Each audio quality column against steps: one line per scheduler, one subplot column per checkpoint."""
    columns = [c for c in quality_columns(frame) if _has(frame, c) and c.split(":")[0] not in SPEECH_METRICS]
    return _steps_figure(frame, columns, out_dir, "Quality against steps", "quality_steps.png")


def wer_steps_plot(frame: pd.DataFrame, out_dir: str | Path) -> Path | None:
    """Speech cells: WER and CER against steps, one line per scheduler, one subplot column per checkpoint."""
    columns = [c for c in quality_columns(frame) if _has(frame, c) and c.split(":")[0] in SPEECH_METRICS]
    return _steps_figure(frame, columns, out_dir, "Intelligibility against steps (speech cells)", "wer_steps.png")


def _steps_figure(frame: pd.DataFrame, columns: list[str], out_dir: str | Path, title: str,
                  name: str) -> Path | None:
    if not columns:
        return None
    groups = _groups(frame)
    # A run or checkpoint that was never scored gets no empty panel.
    panels = sorted(g for g in set(groups) if frame.loc[groups == g, columns].notna().any().any())
    fig = Figure(figsize=(4.6 * len(panels), 2.8 * len(columns)), layout="constrained")
    axes = fig.subplots(len(columns), len(panels), squeeze=False)
    schedulers = _colours(sorted(set(frame["scheduler"].astype(str))))
    for row, column in enumerate(columns):
        for col, group in enumerate(panels):
            _steps_lines(axes[row][col], frame[groups == group], column, schedulers)
            axes[row][col].set_title(f"{group}: {metric_title(column)}", fontsize=8)
            axes[row][col].set_xlabel("denoising steps")
            axes[row][col].set_ylabel(metric_title(column).split(",")[0])
    handles = {h.get_label(): h for ax in fig.axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside upper right", fontsize=8,
               title="scheduler (bars: CI)", title_fontsize=8)
    fig.suptitle(title)
    return _save(fig, out_dir, name)


# Cells on one steps line differ only in steps: a line never joins other guidance scales etc.
_LINE_SETTINGS = ["guidance_scale", "dtype", "audio_length_s", "negative_prompt", "runtime_options"]


def _variant(row: pd.Series) -> str:
    """g3.5 fp32 10.24s (+neg, +runtime options when set): what tells one steps line from another."""
    text = f"g{row['guidance_scale']:g} {row['dtype']} {row['audio_length_s']:g}s"
    return text + (" +neg" if row.get("negative_prompt") else "")


def _steps_lines(ax, part: pd.DataFrame, column: str, colours: dict[str, tuple]) -> None:
    for scheduler in sorted(set(part["scheduler"].astype(str))):
        variants = part[part["scheduler"].astype(str) == scheduler].groupby(
            [c for c in _LINE_SETTINGS if c in part], dropna=False, sort=True)
        for i, (key, rows) in enumerate(variants):
            rows = rows.sort_values("steps")
            y = rows[column].to_numpy(float)
            low = rows.get(f"{column}:ci_low", pd.Series(np.nan, index=rows.index)).to_numpy(float)
            high = rows.get(f"{column}:ci_high", pd.Series(np.nan, index=rows.index)).to_numpy(float)
            # Cells without a CI get a zero-length bar rather than dropping the point.
            err = np.vstack([np.nan_to_num(y - low), np.nan_to_num(high - y)]).clip(min=0)
            label = scheduler if variants.ngroups == 1 else f"{scheduler} ({_variant(rows.iloc[0])})"
            ax.errorbar(rows["steps"].to_numpy(float), y, yerr=err, marker="o", capsize=3,
                        color=colours[scheduler], linestyle=("-", "--", ":", "-.")[i % 4], label=label)
    ax.set_xticks(sorted(set(part["steps"].astype(int))))
    ax.grid(alpha=0.3)


def stage_latency_plot(frame: pd.DataFrame, out_dir: str | Path) -> Path | None:
    """Horizontal bars per cell of the p50 latency of each stage, stacked."""
    stages = [s for s in STAGES if _has(frame, f"latency_ms:{s}:p50")]
    if not stages:
        return None
    names = cell_names(frame)
    fig = Figure(figsize=(10, 1.4 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    left = np.zeros(len(names))
    colours = _colours(stages)
    for stage in stages:
        values = np.nan_to_num(frame[f"latency_ms:{stage}:p50"].to_numpy(float))
        ax.barh(names, values, left=left, color=colours[stage], label=stage)
        left += values
    ax.invert_yaxis()  # first cell on top, as in the table
    ax.set_xlabel("latency p50 per stage (ms), stacked")
    ax.set_title("Stage latencies per cell (medians of each stage; their sum need not equal the total p50)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_dir, "stage_latency.png")


def memory_plot(frame: pd.DataFrame, out_dir: str | Path) -> Path | None:
    """Memory per stage per cell, one subplot per memory kind (kinds never share an axis)."""
    by_kind: dict[str, list[str]] = {}
    for column in frame.columns:
        if column.startswith("memory_mib:") and _has(frame, column):
            by_kind.setdefault(column.split(":")[2], []).append(column)
    if not by_kind:
        return None
    names = cell_names(frame)
    kinds = sorted(by_kind)
    heights = [1.2 + len(names) * (0.25 + 0.1 * len(by_kind[k])) for k in kinds]
    fig = Figure(figsize=(10, sum(heights)), layout="constrained")
    axes = fig.subplots(len(kinds), 1, squeeze=False, height_ratios=heights)[:, 0]
    for ax, kind in zip(axes, kinds):
        _memory_bars(ax, frame, names, by_kind[kind])
        ax.set_xlabel(MEMORY_KINDS.get(kind, f"{kind} (MiB)"))
        ax.set_title(f"Memory per stage: {MEMORY_KINDS.get(kind, kind)}", fontsize=9)
    return _save(fig, out_dir, "memory.png")


def _memory_bars(ax, frame: pd.DataFrame, names: list[str], columns: list[str]) -> None:
    height = 0.8 / len(columns)
    colours = _colours([c.split(":")[1] for c in columns])
    base = np.arange(len(names))
    for k, column in enumerate(columns):
        stage = column.split(":")[1]
        ax.barh(base + k * height, frame[column].to_numpy(float), height=height, color=colours[stage], label=stage)
    ax.set_yticks(base + 0.4 - height / 2, names, fontsize=8)
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="x", alpha=0.3)


PLOTS = (latency_quality_plot, quality_steps_plot, wer_steps_plot, stage_latency_plot, memory_plot)


def write_plots(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every figure the frame has data for; returns the written paths."""
    return [p for p in (plot(frame, Path(out_dir)) for plot in PLOTS) if p is not None]
