"""Build a report folder from run folders: cells.csv, cells.parquet, report.md and index.html.

The HTML page is self-contained: inline CSS and JS, plots under ``plots/`` and the audio it
plays copied under ``audio/`` (named by content hash), so it works from file:// offline.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.results import RunData, cell_frame, higher_is_better, load_run, quality_columns, sample_frame
from harness.fileio import atomic_write_bytes
from harness.store import file_problem
from harness.text import visible
from harness.report.plots import MEMORY_KINDS, PLOTS, metric_title

FORMATS = ("html", "md", "csv", "parquet")
FILES = {"csv": "cells.csv", "parquet": "cells.parquet", "md": "report.md", "html": "index.html"}
_HASHED_WAV = re.compile(r"^[0-9a-f]{64}\.wav$")
_FAILURE_ROWS = 200  # failed samples listed on the page; the rest are counted
_WORST_TRANSCRIPTS = 5  # per speech cell and recogniser: the samples with the highest WER


@dataclass
class ReportResult:
    """What ``build_report`` wrote: one file per format, the plots and the copied audio."""

    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    audio: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. audio not served: missing or changed

    @property
    def paths(self) -> list[Path]:
        """Every path written, report files first."""
        return [*self.files.values(), *self.plots, *self.audio]


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"html,md"`` or a sequence -> validated format names, in the given order."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = list(dict.fromkeys(n.strip().lower() for n in names if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        what = f"unknown report format(s) {', '.join(map(repr, unknown))}" if unknown else "no report format given"
        raise ValueError(f"{what}; allowed: {', '.join(FORMATS)}")
    return tuple(names)


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 formats: str | Sequence[str] = FORMATS, listen: int = 3,
                 labels: Sequence[str] | None = None) -> ReportResult:
    """Write the report of one or more run folders into ``out_dir``; returns the paths written."""
    formats = parse_formats(formats)
    if listen < 0:
        raise ValueError(f"listen must be >= 0, got {listen}")
    runs = load_runs(run_dirs, labels)
    out = _out_folder(Path(out_dir))
    cells, samples = cell_frame(runs), sample_frame(runs)
    if cells.empty:
        raise ValueError(f"no cells in {', '.join(str(r.path) for r in runs)}: nothing to report; "
                         "run `audioldm2-harness run` or `bench` first")
    cells = display_order(cells, [r.label for r in runs])
    result = ReportResult(out)
    if "csv" in formats:
        _visible_text(cells).to_csv(out / FILES["csv"], index=False)
    if "parquet" in formats:
        cells.to_parquet(out / FILES["parquet"], index=False)
    if "md" in formats:
        (out / FILES["md"]).write_text(markdown_report(cells, samples, runs), encoding="utf-8")
    if "html" in formats:
        result.plots, result.audio, result.warnings = _write_html(cells, samples, runs, out, listen, formats)
    result.files = {f: out / FILES[f] for f in formats}
    return result


def _visible_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells show control characters (``harness.text.visible``)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(lambda v: visible(v) if isinstance(v, str) else v)
    return out


def load_runs(run_dirs: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[RunData]:
    """Load each run folder; labels (default: folder names) must be unique, they identify the runs."""
    if not run_dirs:
        raise ValueError("no run folder given")
    if labels and len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} label(s) for {len(run_dirs)} run folder(s); give one label per run")
    runs = [load_run(d, lab) for d, lab in zip(run_dirs, labels or [None] * len(run_dirs))]
    names = [r.label for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"run label(s) {', '.join(map(repr, dupes))} used twice; give each run its own "
                         "label (--label NAME, once per run, in order)")
    return runs


def _out_folder(out: Path) -> Path:
    """Create the report folder, refusing a run folder, and clear what an earlier report left."""
    if (out / "run.sqlite").exists():
        raise ValueError(f"{out} is a run folder; write the report to another folder")
    out.mkdir(parents=True, exist_ok=True)
    # Only files this module names are removed, so a mistaken --out loses nothing else.
    for old in (out / "audio").glob("*.wav"):
        if _HASHED_WAV.match(old.name):
            old.unlink()
    for plot in PLOTS:
        (out / "plots" / f"{plot.__name__.removesuffix('_plot')}.png").unlink(missing_ok=True)
    return out


def display_order(cells: pd.DataFrame, run_labels: Sequence[str]) -> pd.DataFrame:
    """Rows by run (in the order given), then checkpoint, scheduler, steps and the other settings."""
    keys = ["checkpoint", "scheduler", "steps", "guidance_scale", "dtype", "audio_length_s", "cell_id"]
    order = cells.assign(_run=cells["run"].map({r: i for i, r in enumerate(run_labels)}))
    return order.sort_values(["_run", *keys], kind="stable").drop(columns="_run").reset_index(drop=True)


# ---- formatting ---------------------------------------------------------------------------

def fmt(value: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, large values without exponent; '–' when absent."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    return f"{value:.0f}" if 1e4 <= abs(value) < 1e12 else f"{value:.{digits}g}"


def _get(row: pd.Series, column: str) -> Any:
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def quality_text(row: pd.Series, column: str) -> str:
    """``value [ci_low, ci_high] (n=..)`` of one quality column, or '–'."""
    value = _get(row, column)
    if value is None:
        return "–"
    low, high, n = (_get(row, f"{column}:{k}") for k in ("ci_low", "ci_high", "n"))
    ci = f" [{fmt(low)}, {fmt(high)}]" if low is not None and high is not None else ""
    count = f" (n={int(n)})" if n is not None else ""
    return f"{fmt(value)}{ci}{count}"


def _md(text: Any) -> str:
    # Table-safe and inert on GitHub: no raw HTML, no column breaks, one line, controls visible.
    return html.escape(" ".join(visible(str(text)).split()), quote=False).replace("|", "\\|")


def _error_line(text: Any, limit: int = 300) -> str:
    line = (str(text or "").strip().splitlines() or [""])[-1]  # tracebacks end with the message
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---- Markdown --------------------------------------------------------------------------------

def markdown_report(cells: pd.DataFrame, samples: pd.DataFrame, runs: Sequence[RunData]) -> str:
    """Compact Markdown (fits a pull-request comment): one row per cell, then failures and conventions."""
    multi = len(runs) > 1
    quality = quality_columns(cells)
    header = [*(["run"] if multi else []), "cell", "ok / failed / flagged", "latency p50 (ms)", "RTF",
              *(metric_title(q).split(",")[0] for q in quality)]
    duty = [f"{_md(r.label)} {r.duty['duty_cycle']:.3f}" for r in runs if r.duty]
    lines = [f"## AudioLDM 2 report: {_md(', '.join(r.label for r in runs))}", "",
             "| " + " | ".join(_md(h) for h in header) + " |",
             "|" + "---|" * (len(header) - len(quality) - 2) + "---:|" * (2 + len(quality))]
    for _, row in cells.iterrows():
        failed = f"**{row['n_failed']} failed**" if row["n_failed"] else "0"
        values = [*([_md(row["run"])] if multi else []), _md(row["label"]),
                  f"{row['n_ok']} / {failed} / {row['n_flagged']}",
                  fmt(_get(row, "latency_ms:total:p50")), fmt(_get(row, "rtf"), 3),
                  *(_md(quality_text(row, q)) for q in quality)]
        lines.append("| " + " | ".join(values) + " |")
    lines += ["", *_md_failures(cells, samples, multi), "",
              *([f"Duty cycle of the last generation (pipeline-call s / wall s): {', '.join(duty)}", ""] if duty else []),
              *(_md(c) + "  " for c in conventions(runs, cells))]
    return "\n".join(lines) + "\n"


def _md_failures(cells: pd.DataFrame, samples: pd.DataFrame, multi: bool) -> list[str]:
    bad = samples[samples["status"] != "ok"] if not samples.empty else samples
    if bad.empty:
        return ["No failed samples."]
    labels = {(r, c): lab for r, c, lab in zip(cells["run"], cells["cell_id"], cells["label"])}
    lines = [f"**Failed samples: {len(bad)}**", ""]
    for (run, cell_id), part in bad.groupby(["run", "cell_id"], sort=False):
        for error, group in part.groupby(part["error"].map(_error_line), sort=False):
            where = f"{run}: " if multi else ""
            pairs = [f"{p}/seed {s}" for p, s in zip(group["prompt_id"], group["seed"])]
            more = f" and {len(pairs) - 10} more" if len(pairs) > 10 else ""
            lines.append(f"- {_md(where + labels.get((run, cell_id), cell_id))}: {len(group)} failed: "
                         f"{_md(error or 'no error text')} ({_md(', '.join(pairs[:10]))}{more})")
    return lines


def conventions(runs: Sequence[RunData], cells: pd.DataFrame) -> list[str]:
    """Plain-text notes on what the figures mean: CIs, references, embedders, latency source."""
    refs = sorted({(m["reference"], m["reference_id"][:12]) for r in runs for m in r.metrics
                   if m["reference_id"] not in ("prompts", "transcriptions")})
    embedders = sorted({m["embedder_id"] for r in runs for m in r.metrics})
    levels = sorted({m["confidence"] for r in runs for m in r.metrics if m["confidence"] is not None})
    notes = []
    if embedders:
        level = "/".join(f"{c:.0%}" for c in levels) or "no"
        notes.append(f"Quality: value [CI low, CI high] (n = samples scored), {level} bootstrap CI over prompts; "
                     "FAD and KAD lower is better, CLAP score (cosine of a sample's own prompt and audio) "
                     f"higher is better. Embedders: {', '.join(embedders)}.")
    protocols: dict[str, set[str]] = {}
    for r in runs:
        for m in r.metrics:
            proto = m["details"].get("protocol")
            if proto:
                protocols.setdefault(f"{proto['name']}@{proto['version']}", set()).add(
                    f"{proto['label']} = {m['metric']}:{m['embedder']}")
    for key, figures in sorted(protocols.items()):
        notes.append(f"Protocol {key}: " + ", ".join(sorted(figures)) + ".")
    if any(m["metric"] == "wer" for r in runs for m in r.metrics):
        notes.append("Speech: WER and CER (lower is better) of Whisper transcripts against each sample's "
                     "transcription, both through Whisper's English normaliser; corpus-level per cell "
                     "(total edits / total reference words or characters).")
    if refs:
        notes.append("FAD/KAD reference: " + "; ".join(f"{name} (id {rid})" for name, rid in refs) + ".")
    # "ms per call of 1" reads oddly: name the batch ("ms per call (1 sample)").
    units = sorted({re.sub(r"^ms per call of (\d+)$", lambda m: f"ms per call ({m[1]} sample{'' if m[1] == '1' else 's'})", u)
                    for u in cells["latency_unit"].dropna()})
    notes.append(f"Latency: median (p50) and p90 in {' / '.join(units) or 'no unit: not measured'} (bench: "
                 "timed whole-pipeline calls at the smallest measured batch; run: generation timings per "
                 "sample); RTF = compute seconds per second of audio.")
    return notes


# ---- HTML ------------------------------------------------------------------------------------

def _write_html(cells: pd.DataFrame, samples: pd.DataFrame, runs: Sequence[RunData], out: Path,
                listen: int, formats: Sequence[str]) -> tuple[list[Path], list[Path], list[str]]:
    from harness.report.plots import write_plots

    plots = write_plots(cells, out / "plots")
    listen_rows, audio = listen_section(cells, samples, out, listen)
    context = {
        "title": "AudioLDM 2 report: " + ", ".join(r.label for r in runs),
        "runs": [_run_info(r) for r in runs],
        "columns": (columns := table_columns(cells)),
        "rows": [{"cells": [col["cell"](row) for col in columns], "bad": bool(row["n_failed"])}
                 for _, row in cells.iterrows()],
        "plots": [{"src": p.relative_to(out).as_posix(), "alt": p.stem.replace("_", " ")} for p in plots],
        "listen_headers": [_cell_name(row, len(runs) > 1) for _, row in cells.iterrows()],
        "listen_rows": listen_rows, "listen_wanted": listen,
        "transcripts": (worst := worst_transcripts(runs, cells, samples, out)),
        "failures": failure_rows(cells, samples, len(runs) > 1),
        "conventions": conventions(runs, cells),
        "downloads": [FILES[f] for f in formats if f != "html"],
    }
    (out / FILES["html"]).write_text(_template().render(**context), encoding="utf-8")
    unserved = [e["error"] for row in listen_rows for e in row["cells"]
                if e["error"] and e["error"].startswith("audio not served")]
    return plots, audio + [p for p in worst_audio(worst) if p not in audio], unserved


def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # autoescape on for every template: prompts, labels and paths are user text.
    # finalize: every value shows its control characters (a NUL byte never reaches the page raw).
    env = Environment(loader=PackageLoader("harness.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      finalize=lambda v: visible(v) if type(v) is str else v)
    return env.get_template("report.html.j2")


def _cell_name(row: pd.Series, multi: bool) -> str:
    return f"{row['run']}: {row['label']}" if multi else str(row["label"])


def _run_info(run: RunData) -> dict[str, Any]:
    env = run.environment
    versions = env.get("versions", {}) or {}
    failed = sum(1 for s in run.samples if s["status"] != "ok")
    return {"label": run.label, "path": str(run.path.resolve()), "cells": len(run.cells),
            "samples": len(run.samples), "failed": failed, "git": str(env.get("git_commit") or "–")[:12],
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
            "device": "CUDA" if env.get("cuda_available") else str(env.get("cpu") or "–"),
            "duty": "–" if not run.duty else f"{run.duty['duty_cycle']:.3f}"}


def _num_cell(value: Any, text: str | None = None, sub: str = "") -> dict[str, Any]:
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
    return {"text": fmt(value) if text is None else text, "sort": "" if value is None else repr(float(value)),
            "sub": sub}


def _text_cell(value: Any) -> dict[str, Any]:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return {"text": text, "sort": text, "sub": ""}


def table_columns(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """The comparison table's columns: title, numeric or not, and how to render a row's cell."""
    def text(title: str, key: str, **kw) -> dict[str, Any]:
        return {"title": title, "numeric": False, "cell": lambda r: _text_cell(_get(r, key)), **kw}

    def num(title: str, key: str, digits: int = 4) -> dict[str, Any]:
        return {"title": title, "numeric": True, "cell": lambda r: _num_cell(_get(r, key), fmt(_get(r, key), digits))}

    columns = [text("run", "run")] if cells["run"].nunique() > 1 else []
    columns += [text("cell", "label"), text("checkpoint", "checkpoint"), text("scheduler", "scheduler"),
                num("steps", "steps"), num("guidance", "guidance_scale"), text("dtype", "dtype"),
                num("ok", "n_ok"), num("failed", "n_failed"), num("flagged", "n_flagged"),
                num("latency p50 (ms)", "latency_ms:total:p50"), num("latency p90 (ms)", "latency_ms:total:p90"),
                num("RTF", "rtf", 3), text("latency source", "latency_source"), text("latency unit", "latency_unit")]
    for column in cells.columns:
        if column.startswith("memory_mib:total:"):
            kind = column.split(":")[2]
            columns.append(num(f"total {MEMORY_KINDS.get(kind, kind + ' (MiB)')}", column))
    for q in quality_columns(cells):
        higher = higher_is_better(q.split(":")[0])
        columns.append({"title": metric_title(q).split(",")[0] + (" \u2191" if higher else " \u2193"),
                        "numeric": True, "better": "higher" if higher else "lower",
                        "cell": lambda r, q=q: _quality_cell(r, q)})
    return columns


def _quality_cell(row: pd.Series, column: str) -> dict[str, Any]:
    value = _get(row, column)
    rest = quality_text(row, column)[len(fmt(value)):].strip() if value is not None else ""
    return _num_cell(value, sub=rest)


def listen_pairs(cells: pd.DataFrame, samples: pd.DataFrame, n: int) -> list[tuple[str, int]]:
    """Up to n (prompt id, seed) pairs: those in every cell first (sorted), then the ones that
    reach cells not yet covered (a sweep of speech and audio checkpoints shares no prompt)."""
    if n <= 0 or samples.empty:
        return []
    where: dict[tuple[str, int], set] = {}
    for s in samples.itertuples():
        where.setdefault((str(s.prompt_id), int(s.seed)), set()).add((s.run, s.cell_id))
    ordered = sorted(where, key=lambda k: (-len(where[k]), k))
    chosen: list[tuple[str, int]] = []
    covered: set = set()
    while ordered and len(chosen) < n:
        best = min(range(len(ordered)), key=lambda i: (-len(where[ordered[i]] - covered), i))
        chosen.append(ordered.pop(best))
        covered |= where[chosen[-1]]
    return chosen


def listen_section(cells: pd.DataFrame, samples: pd.DataFrame, out: Path,
                   n: int) -> tuple[list[dict[str, Any]], list[Path]]:
    """Rows of the listen section (prompt, then one player or error per cell); copies the audio."""
    rows, copied = [], []
    by_key = {(r.run, r.cell_id, r.prompt_id, int(r.seed)): r for r in samples.itertuples()}
    for prompt_id, seed in listen_pairs(cells, samples, n):
        entries, prompt = [], ""
        for run, cell_id in zip(cells["run"], cells["cell_id"]):
            sample = by_key.get((run, cell_id, prompt_id, seed))
            prompt = prompt or (sample.prompt if sample is not None else "")
            entry, path = _listen_entry(sample, out)
            entries.append(entry)
            if path is not None and path not in copied:
                copied.append(path)
        rows.append({"prompt": prompt, "prompt_id": prompt_id, "seed": seed, "cells": entries})
    return rows, copied


def _listen_entry(sample: Any, out: Path) -> tuple[dict[str, str | None], Path | None]:
    """One cell of a listen row: a player's src, else the error, else why there is nothing."""
    if sample is None:
        return {"src": None, "error": None, "missing": "not generated in this cell"}, None
    if sample.status != "ok":
        return {"src": None, "error": _error_line(sample.error) or "failed (no error text)", "missing": None}, None
    src = Path(sample.audio_file) if sample.audio_file else None
    problem = file_problem(src, sample.audio_sha256) if src is not None else "no audio file recorded"
    if problem:  # never serve audio that is not what was stored
        return {"src": None, "error": f"audio not served: {problem}", "missing": None}, None
    dest = out / "audio" / f"{sample.audio_sha256}.wav"
    if not dest.exists():  # content-addressed: identical audio is stored once
        data = src.read_bytes()  # the bytes checked are the bytes served, even if the file changes now
        if hashlib.sha256(data).hexdigest() != sample.audio_sha256:
            return {"src": None, "error": f"audio not served: {src} changed while it was read", "missing": None}, None
        atomic_write_bytes(dest, data)
    return {"src": dest.relative_to(out).as_posix(), "error": None, "missing": None}, dest


def worst_transcripts(runs: Sequence[RunData], cells: pd.DataFrame, samples: pd.DataFrame,
                      out: Path, n: int = _WORST_TRANSCRIPTS) -> list[dict[str, Any]]:
    """Per speech cell and recogniser, its ``n`` highest-WER samples with a player (audio copied)."""
    by_key = {(r.run, r.cell_id, r.prompt_id, int(r.seed)): r for r in samples.itertuples()}
    labels = {(r, c): _cell_name(row, len(runs) > 1) for (r, c), (_, row)
              in zip(zip(cells["run"], cells["cell_id"]), cells.iterrows())}
    groups = []
    for run in runs:
        for m in (m for m in run.metrics if m["metric"] == "wer"):
            rows = []
            for t in m["details"].get("transcripts", [])[:n]:
                entry, path = _listen_entry(by_key.get((run.label, m["cell_id"], t["prompt_id"], int(t["seed"]))), out)
                rows.append({**t, "player": entry, "path": path,
                             "counts": f"S{t['substitutions']} D{t['deletions']} I{t['insertions']}",
                             "flags": ", ".join(t["flags"])})
            groups.append({"cell": labels.get((run.label, m["cell_id"]), m["cell_id"]), "model": m["embedder"],
                           "wer": fmt(m["value"]), "rows": rows})
    return groups


def worst_audio(groups: list[dict[str, Any]]) -> list[Path]:
    """The audio files ``worst_transcripts`` copied into the report."""
    return list(dict.fromkeys(r["path"] for g in groups for r in g["rows"] if r["path"] is not None))


def failure_rows(cells: pd.DataFrame, samples: pd.DataFrame, multi: bool) -> dict[str, Any]:
    """Failed and flagged samples for the page (at most a few hundred rows; the rest counted)."""
    if samples.empty:
        return {"rows": [], "more": 0, "n_failed": 0, "n_flagged": 0}
    labels = {(r, c): _cell_name(row, multi) for (r, c), (_, row)
              in zip(zip(cells["run"], cells["cell_id"]), cells.iterrows())}
    failed = samples[samples["status"] != "ok"]
    flagged = samples[(samples["status"] == "ok") & (samples["flags"] != "")]
    rows = [{"cell": labels.get((s.run, s.cell_id), s.cell_id), "prompt_id": s.prompt_id, "seed": int(s.seed),
             "status": "failed" if s.status != "ok" else f"flagged: {s.flags}",
             "error": str(s.error or "") if s.status != "ok" else ""}
            for s in pd.concat([failed, flagged]).itertuples()]
    return {"rows": rows[:_FAILURE_ROWS], "more": max(0, len(rows) - _FAILURE_ROWS),
            "n_failed": len(failed), "n_flagged": len(flagged)}
