"""The scoring stage: a run's stored audio + embedders + metric math -> rows in the metrics table.

For every cell with ok samples (or the cells asked for), every embedder and every registered
metric asked for (``harness.score.metrics.registry``; default ``fad,kad,clap_score``) that the
embedder can feed:

* ``fad``: Fréchet audio distance of the cell's clips to the reference (on ``pann``: the PANN
  FD of audioldm_eval);
* ``kad``: kernel audio distance to the reference, bandwidth = median pairwise distance of the
  full reference set (fixed across bootstrap resamples, so resamples share one kernel);
* ``clap_score``: for embedders with a text encoder (``clap``, ``tiny-clap``), the mean cosine
  between each sample's audio and the text of *that sample's* prompt (rows are paired through
  the sample rows of the store, never through file order);
* ``kl_softmax``, ``kl_sigmoid`` (embedders with class logits: ``pann``, ``tiny-pann``; a
  paired reference), ``inception_score`` (logits).

``protocol``: a named list of (metric, embedder, options) (``harness.score.protocols``), e.g.
``audioldm-eval``; its rows store ``details.protocol``.

The reference is a folder of audio (ingested by ``harness.data.references``: manifest and
quarantine are written to ``<run>/scores/reference-<id>.json``) or ``cell:<id>``, another cell
of the same run: FAD/KAD to a baseline, computed on the (prompt, seed) pairs both cells have,
and bootstrapped as pairs.

Conventions, stored with every row (``details``):

* Set rows: a clip's embedding is the mean of its window embeddings (``pooling`` clip-mean),
  or every window is a row of the set (``frames``: VGGish by default, as frechet-audio-distance).
  ``n`` is the number of samples scored.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import HarnessError
from harness.data.references import DEFAULT_MIN_DURATION_S
from harness.score.embed.cache import AudioSource, EmbeddingCache, EmbedResult, embed_sources, embed_texts
from harness.score.embed.registry import Embedder, EmbedderError, available, get_embedder, options_of
from harness.score.metrics.frechet import FAD_INF_MIN_N, fad_extras
from harness.score.metrics.registry import Metric, MetricData, available_metrics, metric_class
from harness.score.reference import Reference, ReferenceOptions, clip_loader, resolve_cell, resolve_reference
from harness.store import RunStore, open_store, require_intact_audio

__all__ = ["METRICS", "ScoreError", "ScoreResult", "applies", "check_metrics", "clip_loader", "clip_matrix",
           "fad_extras", "paired_only", "parse_embedders", "parse_metrics", "print_scores", "resolve_cell", "score_run",
           "FAD_INF_MIN_N"]

METRICS = ("fad", "kad", "clap_score")  # the default set
DEFAULT_BOOTSTRAP = 200
_POOLING = {"clip-mean": "mean of the clip's window embeddings",
            "frames": "every window of every clip is a row (frechet-audio-distance)"}


CLAP_EMBEDDERS = ("clap", "clap-window")  # the embedders --clap-model applies to

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
    protocol: str | None = None
    pairing: dict[str, Any] | None = None

    @property
    def computed_total(self) -> int:
        """Embeddings computed (not read from the cache) by this call."""
        return sum(self.computed.values())


def _name_list(spec: str | Sequence[str]) -> list[str]:
    """``"a, b,a"`` or a list -> the stripped non-empty names, first occurrence of each kept."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))


def parse_embedders(spec: str | Sequence[str]) -> list[str]:
    """``"mel,clap"`` or a list -> validated names (order kept, duplicates dropped)."""
    names = _name_list(spec)
    valid = available()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        what = f"unknown embedder {bad[0]!r}" if bad else "no embedder given"
        raise EmbedderError(f"{what}; valid: {', '.join(valid)}")
    return names


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    """``"fad,kl_softmax"`` or a list -> validated registered metric names."""
    names = _name_list(spec)
    valid = available_metrics()
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ScoreError(f"unknown metric {bad[0] if bad else ''!r}; valid: {', '.join(valid)}")
    return names


def build_embedder(name: str, options: dict[str, Any], device: str) -> Embedder:
    """The embedder ``name`` with ``options``, on ``device`` when it takes one (in full float32:
    no TF32 on a GPU)."""
    if "device" in options_of(name):
        options = {**options, "device": device}
        if device != "cpu":
            from harness.score.embed._torch import full_float32

            full_float32()
    return get_embedder(name, **options)


def clip_matrix(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(n, dim) float64: each clip's window embeddings averaged."""
    return np.stack([np.asarray(a, dtype=np.float64).mean(axis=0) for a in arrays])


@dataclass
class _Job:
    """One embedder to build and the metrics to compute on it."""

    name: str  # the embedder's registry name as built (after substitution)
    options: dict[str, Any]
    metrics: list[str]
    labels: dict[str, Any] = field(default_factory=dict)  # metric -> protocol entry details


def _plan(names: list[str], metrics: list[str], options: dict[str, dict[str, Any]], protocol: str | None,
          substitute: dict[str, str] | None) -> tuple[list[_Job], Any]:
    """Which embedders to build with which options, and which metrics each feeds."""
    if protocol is None:
        return [_Job(n, options.get(n, {}), list(metrics)) for n in names], None
    from harness.score.protocols import get_protocol

    proto = get_protocol(protocol)
    substitute = substitute or {}
    jobs = []
    for emb, opts in proto.embedders().items():
        built = substitute.get(emb, emb)
        if built not in available():
            raise EmbedderError(f"unknown embedder {built!r}; valid: {', '.join(available())}")
        entries = [e for e in proto.entries if e.embedder == emb]
        labels = {e.metric: {"name": proto.name, "version": proto.version, "label": e.label,
                             "source_name": e.source_name, "embedder": emb,
                             **({"substituted_by": built} if built != emb else {})} for e in entries}
        jobs.append(_Job(built, {**opts, **options.get(built, options.get(emb, {}))}, [e.metric for e in entries], labels))
    return jobs, proto


def check_metrics(plan: Sequence[tuple[Sequence[str], Embedder]], reference: Reference, protocol: Any = None) -> None:
    """One-line errors for metrics (per built embedder) that no selected embedder or the reference can feed."""
    built = [e for _, e in plan]
    for metrics, e in plan:
        for m in metrics:
            cls = metric_class(m)
            if cls.output != "embedding" and cls.output not in e.output_dims():
                if protocol is not None or not any(cls.output in b.output_dims() for b in built):
                    raise ScoreError(f"{m} needs an embedder with {cls.output} (pann, tiny-pann); "
                                     f"{e.name} has none")
    needs_pairs = sorted({m for metrics, _ in plan for m in metrics if "paired_reference" in metric_class(m).needs})
    if needs_pairs and not reference.paired:
        who = f"protocol {protocol.key}" if protocol is not None else "metric"
        raise ScoreError(f"{who} needs a paired reference for {', '.join(needs_pairs)} but {reference.label} is "
                         "unpaired; pass --pair-by stem|audiocaps:CSV|manifest:CSV (or a cell: reference)")


def applies(metric: type[Metric] | Metric, embedder: Embedder) -> bool:
    """Whether ``embedder`` has what ``metric`` reads (a text encoder, its output)."""
    if "text" in metric.needs and not embedder.supports_text:
        return False
    return metric.output == "embedding" or metric.output in embedder.output_dims()


def score_run(run_dir: str | Path, reference: str, embedders: str | Sequence[str] = ("mel",), *,
              clap_model: str | None = None, weights: dict[str, str] | None = None,
              device: str = "cpu", bootstrap: int = DEFAULT_BOOTSTRAP,
              confidence: float = 0.95, seed: int = 0, cells: Sequence[str] | None = None,
              metrics: str | Sequence[str] = METRICS, cache_dir: str | Path | None = None,
              min_duration_s: float = DEFAULT_MIN_DURATION_S, progress: bool = False,
              pair_by: str | None = None, protocol: str | None = None,
              substitute: dict[str, str] | None = None, follow_external_links: bool = False) -> ScoreResult:
    """Score a run folder's stored samples against ``reference``; see the module docstring.

    ``cache_dir``: the embedding cache root (None: the user cache; ``"run"``: ``<run>/embeddings``).
    ``weights``: embedder name -> local weights file (``pann``, ``vggish``). ``pair_by``: how
    reference files pair with prompts (``harness.data.pairing``). ``protocol``: a protocol name;
    it replaces ``embedders`` and ``metrics``. ``substitute``: protocol embedder -> embedder to
    use instead (e.g. ``{"pann": "tiny-pann"}`` for tests; recorded in the rows).
    ``follow_external_links``: use links in the reference folder that leave it (quarantined by default).
    """
    names = parse_embedders(embedders) if protocol is None else []
    metric_names = parse_metrics(metrics) if protocol is None else []
    selected = names if protocol is None else None
    if clap_model and selected is not None and not set(CLAP_EMBEDDERS) & set(selected):
        raise ScoreError("--clap-model is set but no CLAP embedder is selected; add --embedder ...,clap "
                         "(or clap-window)")
    options: dict[str, dict[str, Any]] = {n: {"model": clap_model} for n in CLAP_EMBEDDERS} if clap_model else {}
    for name, path in (weights or {}).items():
        if selected is not None and name not in selected:
            raise ScoreError(f"weights are given for {name} but the {name} embedder is not selected; "
                             f"add --embedder ...,{name}")
        options[name] = {"weights": path}
    if bootstrap < 0:
        raise ScoreError(f"--bootstrap must be >= 0 (0: no intervals), got {bootstrap}")
    if not 0 < confidence < 1:
        raise ScoreError(f"confidence must be in (0, 1), got {confidence}")
    jobs, proto = _plan(names, metric_names, options, protocol, substitute)
    root = Path(run_dir)
    if not (root / "run.sqlite").is_file():
        raise ScoreError(f"{run_dir} is not a run folder (no run.sqlite); run a sweep into it first")
    if device == "auto":
        from harness.environment import resolve_device

        device = resolve_device("auto")
    with open_store(root) as store:
        return _score_locked(store, reference, jobs, proto, device, bootstrap, confidence, seed, cells,
                             cache_dir, ReferenceOptions(min_duration_s, pair_by, follow_external_links), progress)


@dataclass
class _Group:
    """Scored samples of one cell (or the reference cell)."""

    rows: list[dict[str, Any]]  # ok sample rows, store order
    failed: int
    source_index: list[int]  # index into the embedding sources, per row


def _score_locked(store: RunStore, reference: str, jobs: list[_Job], proto, device: str, bootstrap: int,
                  confidence: float, seed: int, cells: Sequence[str] | None, cache_dir,
                  ref_options: ReferenceOptions, progress: bool) -> ScoreResult:
    root = store.root
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in store.samples():
        by_cell[row["cell_id"]].append(row)
    known = list(by_cell)
    wanted = [resolve_cell(c, known) for c in cells] if cells else known
    skipped: dict[str, str] = {}
    ref = resolve_reference(reference, root, by_cell, wanted, ref_options)
    if ref.cell_id in wanted:
        wanted = [c for c in wanted if c != ref.cell_id]
        skipped[ref.cell_id] = "is the reference"

    # --- stored audio: every file inside the run folder and unchanged since it was stored
    require_intact_audio(root, [r for c in [*wanted, *([ref.cell_id] if ref.cell_id else [])] for r in by_cell[c]])

    # --- embedders (built after the cheap checks: loading CLAP takes a while)
    built = [build_embedder(j.name, j.options, device) for j in jobs]
    check_metrics([(j.metrics, e) for j, e in zip(jobs, built)], ref, proto)
    cache = EmbeddingCache(root / "embeddings" if cache_dir == "run" else cache_dir)

    # --- sources: every ok sample of the scored cells (and the reference cell), then the folder
    sources: list[AudioSource] = []
    groups: dict[str, _Group] = {}
    for cell_id in [*wanted, *([ref.cell_id] if ref.cell_id else [])]:
        ok = [r for r in by_cell[cell_id] if r["status"] == "ok"]
        if cell_id != ref.cell_id and not ok:
            skipped[cell_id] = f"no ok samples ({len(by_cell[cell_id])} failed)"
            continue
        index = []
        for r in ok:
            path = store.resolve(r["audio_path"])
            index.append(len(sources))
            sources.append(AudioSource(str(path), clip_loader(path)))
        groups[cell_id] = _Group(ok, len(by_cell[cell_id]) - len(ok), index)
    if ref.cell_id:
        ref.source_index = groups[ref.cell_id].source_index
    ref.add_sources(sources)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sources), desc="embedding", unit="clip", dynamic_ncols=True)
    try:
        emb = embed_sources(sources, built, cache, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    ref.finish(emb.keys, emb.errors)

    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    # After embedding, metrics and their bootstrap CIs take minutes on large runs: a bar with ETA.
    work = [(c, job, e) for c in wanted if c in groups for job, e in zip(jobs, built)]
    for cell_id, job, e in tqdm(work, desc=f"metrics ({bootstrap} bootstrap resamples)", unit="cell x embedder",
                                disable=not progress, dynamic_ncols=True):
        rows += _score_cell(cell_id, groups[cell_id], e, job, emb, cache, ref,
                            groups.get(ref.cell_id) if ref.cell_id else None, bootstrap, confidence, seed)
    for r in rows:
        r["details"] = _json_safe(r["details"])
    store.write_metrics(rows)
    pairing = ref.pairing.to_json(ref.reference_set) if ref.pairing else None
    return ScoreResult(root, ref.label, ref.identity, rows, emb.computed, emb.cached, ref.report_path,
                       len(ref.reference_set.quarantine) if ref.reference_set else 0, skipped, cache.root,
                       proto.key if proto else None, pairing)


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


def _score_cell(cell_id: str, group: _Group, embedder: Embedder, job: _Job, emb: EmbedResult, cache,
                ref: Reference, ref_group: _Group | None, bootstrap: int, confidence: float,
                seed: int) -> list[dict[str, Any]]:
    """The metric rows of one cell and one embedder."""
    outputs = {"embedding": emb.embeddings[embedder.name], **emb.outputs.get(embedder.name, {})}
    vectors = outputs["embedding"]
    usable = [k for k, i in enumerate(group.source_index) if vectors[i] is not None]
    unreadable = [emb.errors[group.source_index[k]] for k in range(len(group.rows))
                  if vectors[group.source_index[k]] is None]
    rows = [group.rows[k] for k in usable]
    x = {o: [arrays[group.source_index[k]] for k in usable] for o, arrays in outputs.items()}
    x_all = clip_matrix(x["embedding"]) if usable else np.zeros((0, embedder.dim))

    flags = Counter(f for r in rows for f in json.loads(r["flags"] or "[]"))
    degenerate = []
    if rows and flags.get("silent", 0) == len(rows):
        degenerate.append("all_silent")
    if len(rows) >= 2 and float(np.max(np.ptp(x_all, axis=0))) == 0.0:
        degenerate.append("constant_embeddings")
    pooling = getattr(embedder, "pooling", "clip-mean")
    base = {
        "embedder_identity": embedder.identity(), "embedder_source": embedder.source(),
        "reference": ref.info, "n_failed": group.failed, "n_unreadable": len(unreadable),
        "unreadable": unreadable[:20], "flags": dict(flags), "pooling": _POOLING[pooling],
        "confidence": confidence,
    }
    data, matching = ref.metric_data(rows, x, outputs, ref_group.rows if ref_group else None, pooling, seed)

    def row(metric, value, n, details, low=None, high=None, reference=ref.label, reference_id=ref.identity):
        if metric in job.labels:
            details = {**details, "protocol": job.labels[metric]}
        return {"cell_id": cell_id, "metric": metric, "embedder": embedder.name,
                "embedder_id": embedder.identity_key, "reference": reference, "reference_id": reference_id,
                "value": value, "ci_low": low, "ci_high": high,
                "confidence": confidence if low is not None else None, "n": n,
                "details": {**base, **details}}

    out = []
    for name in job.metrics:
        metric = metric_class(name)()
        if not applies(metric, embedder):
            continue
        if "text" in metric.needs:
            texts = embed_texts([r["prompt"] for r in rows], embedder, cache, emb) if rows else None
            d = type(data)(x, [r["prompt_id"] for r in rows], [(r["prompt_id"], r["seed"]) for r in rows],
                           pooling, texts=texts, seed=seed)
            res = metric.evaluate(d, bootstrap, confidence, seed)
            details = {"n_prompts": len({r["prompt_id"] for r in rows}), "degenerate": degenerate,
                       "reference": {"kind": "prompts", "pairing": "each sample's own prompt"}, **res.details}
            out.append(row(name, res.value, len(rows), details, res.low, res.high,
                           reference="prompts", reference_id="prompts"))
            continue
        d, extra = data, dict(matching)
        reference_id = ref.identity
        if "paired_reference" in metric.needs:
            d, extra = paired_only(data, extra)
            reference_id = ref.paired_identity
        res = metric.evaluate(d, bootstrap, confidence, seed)
        details = {**extra, "n_prompts": len(set(d.prompts)), "degenerate": degenerate}
        if "reference" in metric.needs or "paired_reference" in metric.needs:
            n_rows = d.rows(d.x[metric.output]).shape[0] if d.n else 0
            n_ref = len(d.y[metric.output]) if d.y else 0
            caveats = ["rank_deficient"] if metric.kind == "set" and 2 <= n_rows <= embedder.dim else []
            details = {**extra, "n_reference": n_ref, "n_prompts": len(set(d.prompts)), "degenerate": degenerate,
                       "caveats": caveats}
        out.append(row(name, res.value, d.n, {**details, **res.details}, res.low, res.high,
                       reference_id=reference_id))
    return out


def paired_only(data: MetricData, extra: dict[str, Any]) -> tuple[MetricData, dict[str, Any]]:
    """The samples with a paired reference clip (aligned cells all have one); ``extra`` gains the unmatched ones."""
    if data.aligned or data.pair is None:
        return data, extra
    keep = [i for i, j in enumerate(data.pair) if j is not None]
    sub = type(data)({o: [a[i] for i in keep] for o, a in data.x.items()}, [data.prompts[i] for i in keep],
                     [data.keys[i] for i in keep], data.pooling, data.y, pair=[data.pair[i] for i in keep],
                     seed=data.seed)
    unmatched = sorted({data.prompts[i] for i, j in enumerate(data.pair) if j is None})
    return sub, {**extra, "paired": True, "n_unmatched": data.n - len(keep), "unmatched_prompts": unmatched[:50]}


def _row_cells(r: dict[str, Any], value: str, ci: str) -> list[str]:
    d = r["details"]
    notes = [*d.get("degenerate", []), *d.get("caveats", [])]
    if d.get("n_failed"):
        notes.append(f"{d['n_failed']} failed")
    if d.get("error"):
        notes.append(f"error: {d['error']}")
    if d.get("ci", {}).get("contains_value") is False:
        notes.append("CI excludes value")
    ref = r["reference"] if r["reference"] == "prompts" else r["reference_id"][:12]
    proto = d.get("protocol")
    metric = f"{r['metric']} ({proto['label']})" if proto else r["metric"]
    return [r["cell_id"], metric, r["embedder"], ref, value, ci, str(r["n"]), ", ".join(notes)]


def print_scores(result: ScoreResult) -> None:
    """Print the metric rows as a table, then notes (quarantine, skipped cells, cache use)."""
    from harness.console import make_console, metric_table

    console = make_console()
    console.print(metric_table("audioldm2-harness score", ("cell", "metric", "embedder", "reference", "value", "CI",
                                                           "n", "notes"), result.rows, _row_cells))
    for cell_id, why in result.skipped_cells.items():
        console.print(f"cell {cell_id} not scored: {why}", highlight=False)
    if result.protocol:
        console.print(f"protocol {result.protocol} (stored with every row as details.protocol)", highlight=False)
    if result.pairing:
        p = result.pairing
        console.print(f"pairing {p['rule']}: {p['n_matched']} prompt(s) paired; {p['n_unmatched_prompts']} prompt(s) "
                      f"without a reference clip, {p['n_unmatched_files']} reference file(s) without a prompt "
                      "(listed in the reference report)", highlight=False, soft_wrap=True)
    if result.reference_report is not None:
        q = f", {result.quarantined} file(s) quarantined" if result.quarantined else ""
        console.print(f"reference manifest{q}: {result.reference_report}", highlight=False, soft_wrap=True)
    computed = ", ".join(f"{k} {v}" for k, v in sorted(result.computed.items())) or "none"
    label = result.reference.replace(":", ": ", 1)  # "folder: /path", "cell: <id>"
    console.print(f"reference {label} (id {result.reference_id[:12]}); embeddings computed: "
                  f"{computed}; read from cache: {sum(result.cached.values())} ({result.cache_dir})",
                  highlight=False, soft_wrap=True)
