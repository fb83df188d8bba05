"""The scoring stage: a run's stored audio + embedders + metric math -> rows in the metrics table.

For every cell with ok samples (or the cells asked for), and every embedder:

* ``fad``: Fréchet audio distance of the cell's clips to the reference (``harness.score.metrics``);
* ``kad``: kernel audio distance to the reference, bandwidth = median pairwise distance of the
  full reference set (fixed across bootstrap resamples, so resamples share one kernel);
* ``clap_score``: for embedders with a text encoder (``clap``, ``tiny-clap``), the mean cosine
  between each sample's audio and the text of *that sample's* prompt (rows are paired through
  the sample rows of the store, never through file order).

The reference is a folder of audio (ingested by ``harness.data.references``: manifest and
quarantine are written to ``<run>/scores/reference-<id>.json``) or ``cell:<id>``, another cell
of the same run: FAD/KAD to a baseline, computed on the (prompt, seed) pairs both cells have,
and bootstrapped as pairs.

Conventions, stored with every row (``details``):

* One row per clip: a clip's embedding is the mean of its window embeddings (the embedder
  documents its windows). ``n`` is the number of samples scored.
* Confidence intervals bootstrap over *prompts*: a resample draws prompts with replacement and
  takes all scored seeds of each drawn prompt (cluster bootstrap; seeds of one prompt are not
  independent draws). FAD/KAD use ``set_metric_ci`` (percentile), CLAP score ``bootstrap_ci``
  (BCa, percentile where BCa is undefined). With fewer than 2 prompts there is no interval.
  FAD is biased upward in the sample size and a resample repeats clips, so the percentile
  interval of FAD can lie entirely above the point estimate (see
  ``harness.score.metrics.bootstrap``); rows say so in ``details.ci.contains_value`` and
  ``details.ci.note``.
* Failed samples are not scored; their count is in ``details.n_failed``. Stored flags of the
  scored samples are counted in ``details.flags``; ``details.degenerate`` lists warnings such as
  ``all_silent`` and ``constant_embeddings``; ``details.caveats`` statistical ones such as
  ``rank_deficient`` (n <= dim: the covariance is singular and FAD depends strongly on n;
  compare FADs only at equal n).
* FAD rows also carry ``details.per_sample_outlier`` ([prompt_id, seed, Mahalanobis distance of
  the clip from the reference Gaussian]: a triage aid for listening, not a share of FAD) and,
  from ``FAD_INF_MIN_N`` scored samples on, ``details.fad_inf`` (intercept of FAD against 1/n
  over subsets without replacement; below that n the extrapolation is noise, so it is skipped
  with the reason).

Embeddings go through the content-keyed cache, so scoring again (or against another
reference) embeds only audio not seen before.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.data.references import DEFAULT_MIN_DURATION_S, ReferenceSet, ingest_reference_folder
from harness.score.embed.audio import Clip
from harness.score.embed.cache import AudioSource, EmbeddingCache, EmbedResult, embed_sources, embed_texts
from harness.score.embed.registry import Embedder, EmbedderError, available, get_embedder, options_of
from harness.score.metrics import (
    bootstrap_ci,
    clap_scores,
    fad_from_embeddings,
    fad_inf,
    frechet_distance,
    gaussian_stats,
    kernel_audio_distance,
    mahalanobis_scores,
    median_pairwise_distance,
    set_metric_ci,
)
from harness.store import RunStore, open_store

__all__ = ["METRICS", "ScoreError", "ScoreResult", "parse_embedders", "print_scores", "score_run"]

METRICS = ("fad", "kad", "clap_score")
DEFAULT_BOOTSTRAP = 200
FAD_INF_MIN_N = 50
_POOLING = "mean of the clip's window embeddings"


class ScoreError(HarnessError, ValueError):
    """Scoring cannot proceed as asked; the message says why and what to do."""


@dataclass
class ScoreResult:
    """Outcome of one ``score`` call."""

    run_dir: Path
    reference: str
    reference_id: str
    rows: list[dict[str, Any]]
    computed: Counter  # embedder name (and "<name>/text") -> embeddings computed now
    cached: Counter  # ... read from the cache
    reference_report: Path | None = None
    quarantined: int = 0
    skipped_cells: dict[str, str] = field(default_factory=dict)
    cache_dir: Path | None = None

    @property
    def computed_total(self) -> int:
        """Embeddings computed (not read from the cache) by this call."""
        return sum(self.computed.values())


def parse_embedders(spec: str | Sequence[str]) -> list[str]:
    """``"mel,clap"`` or a list -> validated names (order kept, duplicates dropped)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = list(dict.fromkeys(s.strip() for s in items if s.strip()))
    valid = available()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        what = f"unknown embedder {bad[0]!r}" if bad else "no embedder given"
        raise EmbedderError(f"{what}; valid: {', '.join(valid)}")
    return names


def build_embedder(name: str, options: dict[str, Any], device: str) -> Embedder:
    """The embedder ``name`` with ``options``, on ``device`` when it takes one."""
    if "device" in options_of(name):
        options = {**options, "device": device}
    return get_embedder(name, **options)


def resolve_cell(prefix: str, cell_ids: Sequence[str]) -> str:
    """The one cell id starting with ``prefix``, or a ScoreError naming the candidates."""
    matches = [c for c in cell_ids if c.startswith(prefix)]
    if len(matches) != 1:
        what = "no cell of this run matches" if not matches else f"{len(matches)} cells of this run match"
        raise ScoreError(f"{what} {prefix!r}; cells: {', '.join(sorted(cell_ids)) or 'none'}")
    return matches[0]


@dataclass
class _Group:
    """Scored samples of one cell (or the reference cell)."""

    rows: list[dict[str, Any]]  # ok sample rows, store order
    failed: int
    source_index: list[int]  # index into the embedding sources, per row


def score_run(run_dir: str | Path, reference: str, embedders: str | Sequence[str] = ("mel",), *,
              clap_model: str | None = None, weights: dict[str, str] | None = None,
              device: str = "cpu", bootstrap: int = DEFAULT_BOOTSTRAP,
              confidence: float = 0.95, seed: int = 0, cells: Sequence[str] | None = None,
              metrics: Sequence[str] = METRICS, cache_dir: str | Path | None = None,
              min_duration_s: float = DEFAULT_MIN_DURATION_S, progress: bool = False) -> ScoreResult:
    """Score a run folder's stored samples against ``reference``; see the module docstring.

    ``cache_dir``: the embedding cache root (None: the user cache; ``"run"``: ``<run>/embeddings``).
    ``weights``: embedder name -> local weights file (``pann``, ``vggish``).
    """
    names = parse_embedders(embedders)
    if clap_model and "clap" not in names:
        raise ScoreError("--clap-model is set but the clap embedder is not selected; add --embedder ...,clap")
    options: dict[str, dict[str, Any]] = {"clap": {"model": clap_model}} if clap_model else {}
    for name, path in (weights or {}).items():
        if name not in names:
            raise ScoreError(f"weights are given for {name} but the {name} embedder is not selected; "
                             f"add --embedder ...,{name}")
        options[name] = {"weights": path}
    bad_metrics = [m for m in metrics if m not in METRICS]
    if bad_metrics or not metrics:
        raise ScoreError(f"unknown metric {bad_metrics[0] if bad_metrics else ''!r}; valid: {', '.join(METRICS)}")
    if bootstrap < 0:
        raise ScoreError(f"--bootstrap must be >= 0 (0: no intervals), got {bootstrap}")
    if not 0 < confidence < 1:
        raise ScoreError(f"confidence must be in (0, 1), got {confidence}")
    root = Path(run_dir)
    if not (root / "run.sqlite").is_file():
        raise ScoreError(f"{run_dir} is not a run folder (no run.sqlite); run a sweep into it first")
    if device == "auto":
        from harness.environment import resolve_device

        device = resolve_device("auto")
    with open_store(root) as store:
        return _score_locked(store, reference, names, options, device, bootstrap, confidence,
                             seed, cells, list(metrics), cache_dir, min_duration_s, progress)


def _score_locked(store: RunStore, reference: str, names: list[str], options: dict[str, dict[str, Any]],
                  device: str, bootstrap: int, confidence: float, seed: int,
                  cells: Sequence[str] | None, metrics: list[str], cache_dir, min_duration_s: float,
                  progress: bool) -> ScoreResult:
    root = store.root
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.samples():
        by_cell[row["cell_id"]].append(row)
    known = list(by_cell)
    wanted = [resolve_cell(c, known) for c in cells] if cells else known
    skipped: dict[str, str] = {}

    # --- the reference
    ref_cell: str | None = None
    ref_set: ReferenceSet | None = None
    report_path: Path | None = None
    if reference.startswith("cell:"):
        ref_cell = resolve_cell(reference[5:].strip(), known)
        ref_label = f"cell:{ref_cell}"
        if sum(r["status"] == "ok" for r in by_cell[ref_cell]) < 2:
            raise ScoreError(f"reference {ref_label} has fewer than 2 ok samples")
        if ref_cell in wanted:
            wanted = [c for c in wanted if c != ref_cell]
            skipped[ref_cell] = "is the reference"
    else:
        ref_set = ingest_reference_folder(reference, min_duration_s=min_duration_s)
        ref_label = f"folder:{ref_set.root}"
        report_path = ref_set.write(root / "scores" / f"reference-{ref_set.identity[:12]}.json")
        if len(ref_set.entries) < 2:
            raise ScoreError(
                f"reference folder {reference} has {len(ref_set.entries)} usable clip(s) (FAD needs >= 2); "
                f"{len(ref_set.quarantine)} quarantined, see {report_path}"
            )

    # --- embedders (built after the cheap checks: loading CLAP takes a while)
    built = [build_embedder(n, options.get(n, {}), device) for n in names]
    cache = EmbeddingCache(root / "embeddings" if cache_dir == "run" else cache_dir)

    # --- sources: every ok sample of the scored cells (and the reference cell), then the folder
    sources: list[AudioSource] = []
    groups: dict[str, _Group] = {}
    for cell_id in [*wanted, *([ref_cell] if ref_cell else [])]:
        ok = [r for r in by_cell[cell_id] if r["status"] == "ok"]
        if cell_id != ref_cell and not ok:
            skipped[cell_id] = f"no ok samples ({len(by_cell[cell_id])} failed)"
            continue
        index = []
        for r in ok:
            path = root / r["audio_path"]
            index.append(len(sources))
            sources.append(AudioSource(str(path), clip_loader(path)))
        groups[cell_id] = _Group(ok, len(by_cell[cell_id]) - len(ok), index)
    ref_index: list[int] = []
    if ref_set is not None:
        for e in ref_set.entries:
            ref_index.append(len(sources))
            sources.append(AudioSource(str(ref_set.root / e.path), clip_loader(ref_set.root / e.path),
                                       e.audio_sha256))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="embedding", unit="clip", dynamic_ncols=True)
    try:
        emb = embed_sources(sources, built, cache, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()

    # --- the reference's identity and rows
    if ref_set is not None:
        ref_id = ref_set.identity
        bad_ref = [emb.errors[i] for i in ref_index if i in emb.errors]
        if bad_ref:
            raise ScoreError(f"reference clips failed to embed: {bad_ref[0]}" +
                             (f" (and {len(bad_ref) - 1} more)" if len(bad_ref) > 1 else ""))
        ref_info = {"kind": "folder", "root": str(ref_set.root), "n": len(ref_set.entries),
                    "n_quarantined": len(ref_set.quarantine),
                    "manifest": report_path.relative_to(root).as_posix()}
    else:
        g = groups[ref_cell]
        keys = sorted(emb.keys[i] for i in g.source_index if emb.keys[i])
        import hashlib

        ref_id = hashlib.sha256("\n".join(keys).encode()).hexdigest()
        ref_info = {"kind": "cell", "cell_id": ref_cell, "n": len(g.rows), "n_failed": g.failed}

    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    # After embedding, metrics and their bootstrap CIs take minutes on large runs: a bar with ETA.
    work = [(c, e) for c in wanted if c in groups for e in built]
    for cell_id, e in tqdm(work, desc=f"metrics ({bootstrap} bootstrap resamples)", unit="cell",
                           disable=not progress, dynamic_ncols=True):
        rows += _score_cell(cell_id, groups[cell_id], e, emb, cache, metrics, ref_set, ref_index,
                            groups.get(ref_cell) if ref_cell else None, ref_label, ref_id, ref_info,
                            bootstrap, confidence, seed)
    for r in rows:
        r["details"] = _json_safe(r["details"])
    store.write_metrics(rows)
    return ScoreResult(root, ref_label, ref_id, rows, emb.computed, emb.cached, report_path,
                       len(ref_set.quarantine) if ref_set else 0, skipped, cache.root)


def _json_safe(value: Any) -> Any:
    """Non-finite floats (e.g. FAD's condition number of a singular product) as "inf"/"nan"
    strings, so details stay valid JSON (SQLite's json functions and strict parsers reject
    Infinity and NaN)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def clip_loader(path: Path) -> Callable[[], Clip]:
    """A loader that decodes ``path`` when called (sources are decoded only on cache misses)."""
    return lambda: Clip.from_file(path)


def clip_matrix(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(n, dim) float64: each clip's window embeddings averaged."""
    return np.stack([np.asarray(a, dtype=np.float64).mean(axis=0) for a in arrays])


def _by_prompt(prompt_ids: Sequence[str]) -> list[np.ndarray]:
    """Row indices per distinct prompt, in first-appearance order."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompt_ids):
        groups.setdefault(p, []).append(i)
    return [np.asarray(v) for v in groups.values()]


def _rows_of(prompt_rows: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    return np.concatenate([prompt_rows[int(i)] for i in np.ravel(idx)])


_SET_CI_NOTE = ("the percentile interval excludes the point estimate: resampled sets repeat clips, "
                "which biases set metrics such as FAD upward; it shows the spread over prompt samples, "
                "not a bias-corrected interval")
_MEAN_CI_NOTE = "the interval excludes the point estimate (a very skewed bootstrap distribution)"


def _ci_details(res, value: float, bootstrap: int, seed: int, note: str) -> dict[str, Any]:
    inside = bool(res.low <= value <= res.high)
    info = {"method": res.method, "n_resamples": bootstrap, "seed": seed, "unit": "prompts",
            "standard_error": res.standard_error, "contains_value": inside}
    if not inside:
        info["note"] = note
    return info


def _score_cell(cell_id, group: _Group, embedder: Embedder, emb: EmbedResult, cache, metrics,
                ref_set, ref_index, ref_group: _Group | None, ref_label: str, ref_id: str,
                ref_info: dict, bootstrap: int, confidence: float, seed: int) -> list[dict[str, Any]]:
    vectors = emb.embeddings[embedder.name]
    usable = [k for k, i in enumerate(group.source_index) if vectors[i] is not None]
    unreadable = [emb.errors[group.source_index[k]] for k in range(len(group.rows))
                  if vectors[group.source_index[k]] is None]
    rows = [group.rows[k] for k in usable]
    x_all = (clip_matrix([vectors[group.source_index[k]] for k in usable]) if usable
             else np.zeros((0, embedder.dim)))

    flags = Counter(f for r in rows for f in json.loads(r["flags"] or "[]"))
    degenerate = []
    if rows and flags.get("silent", 0) == len(rows):
        degenerate.append("all_silent")
    if len(rows) >= 2 and float(np.max(np.ptp(x_all, axis=0))) == 0.0:
        degenerate.append("constant_embeddings")
    base = {
        "embedder_identity": embedder.identity(), "embedder_source": embedder.source(),
        "reference": ref_info, "n_failed": group.failed, "n_unreadable": len(unreadable),
        "unreadable": unreadable[:20], "flags": dict(flags), "pooling": _POOLING,
        "confidence": confidence,
    }

    def row(metric, value, n, details, low=None, high=None, reference=ref_label, reference_id=ref_id):
        return {"cell_id": cell_id, "metric": metric, "embedder": embedder.name,
                "embedder_id": embedder.identity_key, "reference": reference, "reference_id": reference_id,
                "value": value, "ci_low": low, "ci_high": high,
                "confidence": confidence if low is not None else None, "n": n,
                "details": {**base, **details}}

    out = []
    set_metrics = [m for m in metrics if m in ("fad", "kad")]
    if set_metrics:
        if ref_group is not None:  # baseline cell: only (prompt, seed) pairs both cells have
            ref_vectors = {(r["prompt_id"], r["seed"]): vectors[i]
                           for r, i in zip(ref_group.rows, ref_group.source_index) if vectors[i] is not None}
            pairs = [(k, r) for k, r in zip(usable, rows) if (r["prompt_id"], r["seed"]) in ref_vectors]
            x = x_all[[usable.index(k) for k, _ in pairs]] if pairs else np.zeros((0, embedder.dim))
            y = clip_matrix([ref_vectors[(r["prompt_id"], r["seed"])] for _, r in pairs]) if pairs else x
            prompts = [r["prompt_id"] for _, r in pairs]
            keys = [(r["prompt_id"], r["seed"]) for _, r in pairs]
            extra = {"paired": True, "n_unmatched": len(rows) - len(pairs)}
        else:
            x, prompts = x_all, [r["prompt_id"] for r in rows]
            keys = [(r["prompt_id"], r["seed"]) for r in rows]
            y = clip_matrix([vectors[i] for i in ref_index])
            extra = {"paired": False}
        n = x.shape[0]
        caveats = []
        if 2 <= n <= embedder.dim:
            caveats.append("rank_deficient")  # n <= dim: singular covariance, FAD strongly n-dependent
        for metric in set_metrics:
            details = {**extra, "n_reference": int(y.shape[0]), "n_prompts": len(set(prompts)),
                       "degenerate": degenerate, "caveats": caveats}
            try:
                value, low, high, more = _set_metric(metric, x, y, prompts, extra["paired"], bootstrap,
                                                     confidence, seed)
                details.update(more)
                if metric == "fad":
                    details.update(_fad_extras_or_error(x, y, keys, seed))
            except ValueError as err:
                value, low, high = None, None, None
                details["error"] = str(err)
            out.append(row(metric, value, n, details, low, high))

    if "clap_score" in metrics and embedder.supports_text:
        details = {"n_prompts": len({r["prompt_id"] for r in rows}), "degenerate": degenerate,
                   "reference": {"kind": "prompts", "pairing": "each sample's own prompt"}}
        value = low = high = None
        try:
            if not rows:
                raise ValueError("no samples to score")
            texts = embed_texts([r["prompt"] for r in rows], embedder, cache, emb)
            scores = clap_scores(texts, x_all)
            value = float(np.mean(scores))
            details["per_sample"] = [[r["prompt_id"], r["seed"], round(float(s), 6)] for r, s in zip(rows, scores)]
            details["std"] = float(np.std(scores))
            per_prompt = _by_prompt([r["prompt_id"] for r in rows])
            if bootstrap and len(per_prompt) >= 2:
                def mean_of(idx):
                    return float(np.mean(scores[_rows_of(per_prompt, idx)]))

                res = bootstrap_ci(np.arange(len(per_prompt), dtype=np.float64), mean_of,
                                   confidence=confidence, n_resamples=bootstrap, seed=seed)
                low, high = res.low, res.high
                details["ci"] = _ci_details(res, value, bootstrap, seed, _MEAN_CI_NOTE)
            elif bootstrap:
                details["ci"] = {"error": "a bootstrap over prompts needs >= 2 prompts"}
        except ValueError as err:
            details["error"] = str(err)
        out.append(row("clap_score", value, len(rows), details, low, high,
                       reference="prompts", reference_id="prompts"))
    return out


def _fad_extras_or_error(x: np.ndarray, y: np.ndarray, keys: list[tuple[str, int]], seed: int) -> dict[str, Any]:
    # Side figures: when they cannot be computed the FAD itself still stands.
    try:
        return fad_extras(x, y, keys, seed)
    except ValueError as err:
        return {"extras_error": str(err)}


def fad_extras(x: np.ndarray, y: np.ndarray, keys: list[tuple[str, int]], seed: int = 0) -> dict[str, Any]:
    """Per-sample outlier scores against the reference Gaussian, and FAD-inf when n allows."""
    mu_y, s_y = gaussian_stats(y)
    scores = mahalanobis_scores(x, mu_y, s_y)
    out: dict[str, Any] = {"per_sample_outlier": [[p, s, round(float(v), 6)] for (p, s), v in zip(keys, scores)]}
    if x.shape[0] >= FAD_INF_MIN_N:
        res = fad_inf(x, y, seed=seed)
        out["fad_inf"] = {"value": res.value, "slope": res.slope, "r2": res.r2, "ns": list(res.ns)}
    else:
        out["fad_inf"] = {"skipped": f"needs >= {FAD_INF_MIN_N} scored samples; have {x.shape[0]}"}
    return out


def _set_metric(metric: str, x: np.ndarray, y: np.ndarray, prompts: list[str], paired: bool,
                bootstrap: int, confidence: float, seed: int):
    """(value, ci_low, ci_high, details) of FAD or KAD, bootstrapped over prompts."""
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"{metric} needs >= 2 samples and >= 2 reference clips; "
                         f"have {x.shape[0]} and {y.shape[0]}")
    per_prompt = _by_prompt(prompts)
    details: dict[str, Any] = {}
    if metric == "fad":
        res = fad_from_embeddings(x, y)
        value = res.value
        details.update({"raw_value": res.raw_value, "rank": res.rank, "dim": res.dim,
                        "condition": res.condition, "method": res.method, "warnings": list(res.warnings)})
        mu_y, s_y = gaussian_stats(y)

        def fn(ix, iy):
            xs = x[_rows_of(per_prompt, ix)]
            if paired:
                return fad_from_embeddings(xs, y[_rows_of(per_prompt, iy)]).value
            mu_x, s_x = gaussian_stats(xs)
            return frechet_distance(mu_x, s_x, mu_y, s_y).value
    else:
        bandwidth = median_pairwise_distance(y)
        res = kernel_audio_distance(x, y, bandwidth=bandwidth)
        value = res.value
        details.update({"bandwidth": bandwidth, "scale": res.scale})

        def fn(ix, iy):
            ys = y[_rows_of(per_prompt, iy)] if paired else y
            return kernel_audio_distance(x[_rows_of(per_prompt, ix)], ys, bandwidth=bandwidth).value
    low = high = None
    if bootstrap and len(per_prompt) >= 2:
        units = np.arange(len(per_prompt))[:, None]
        ci = set_metric_ci(units, units, fn, paired=True, confidence=confidence,
                           n_resamples=bootstrap, seed=seed)
        low, high = ci.low, ci.high
        details["ci"] = _ci_details(ci, value, bootstrap, seed, _SET_CI_NOTE)
    elif bootstrap:
        details["ci"] = {"error": "a bootstrap over prompts needs >= 2 prompts"}
    return value, low, high, details


def print_scores(result: ScoreResult) -> None:
    """Print the metric rows as a table, then notes (quarantine, skipped cells, cache use)."""
    from rich.table import Table

    from harness.console import make_console

    console = make_console()
    table = Table("cell", "metric", "embedder", "reference", "value", "CI", "n", "notes",
                  title="audioldm2-harness score")
    for r in result.rows:
        d = r["details"]
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        ci = "-" if r["ci_low"] is None else f"[{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
        notes = [*d.get("degenerate", []), *d.get("caveats", [])]
        if d.get("n_failed"):
            notes.append(f"{d['n_failed']} failed")
        if d.get("error"):
            notes.append(f"error: {d['error']}")
        if d.get("ci", {}).get("contains_value") is False:
            notes.append("CI excludes value")
        ref = r["reference"] if r["reference"] == "prompts" else r["reference_id"][:12]
        table.add_row(r["cell_id"], r["metric"], r["embedder"], ref, value, ci, str(r["n"]), ", ".join(notes))
    console.print(table)
    for cell_id, why in result.skipped_cells.items():
        console.print(f"cell {cell_id} not scored: {why}", highlight=False)
    if result.reference_report is not None:
        q = f", {result.quarantined} file(s) quarantined" if result.quarantined else ""
        console.print(f"reference manifest{q}: {result.reference_report}", highlight=False, soft_wrap=True)
    computed = ", ".join(f"{k} {v}" for k, v in sorted(result.computed.items())) or "none"
    label = result.reference.replace(":", ": ", 1)  # "folder: /path", "cell: <id>"
    console.print(f"reference {label} (id {result.reference_id[:12]}); embeddings computed: "
                  f"{computed}; read from cache: {sum(result.cached.values())} ({result.cache_dir})",
                  highlight=False, soft_wrap=True)
