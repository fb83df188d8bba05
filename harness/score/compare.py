"""Paired comparison of two cells of one run: is cell A's quality really different from B's?

Both cells are compared on the (prompt, seed) pairs they share, so prompt mix and seeds cancel.
Each registered metric asked for (``--metrics``; default: every one of ``DEFAULT_METRICS`` the
embedders can feed) is tested by its kind (``harness.score.metrics.registry``):

* mean metrics, one value per sample: CLAP score (embedders with a text encoder) and KL
  (``kl_softmax``, ``kl_sigmoid``: embedders with ``logits``, pann / tiny-pann, and a paired
  reference, ``--pair-by`` or a ``cell:`` reference): paired bootstrap of the mean per-sample
  difference A - B (``harness.score.metrics.bootstrap.paired_bootstrap``), with its CI and
  two-sided p-value. The per-sample values are the registered metric's own, the ones ``score``
  averages; KL uses only the pairs whose prompt has a reference clip (both cells the same ones);
* set metrics: FAD and KAD against the reference and the Inception Score (logits, no
  reference): permutation test of metric(A) - metric(B) that swaps the A/B labels within each
  pair (``permutation_test_sets(paired=True)``); the reference statistics (and KAD's bandwidth,
  the median distance of the reference) are fixed across permutations.

A default metric that cannot be computed (KL without a pairing, IS on fewer than 10 pairs) is
skipped with one line saying why; asked for by name it is an error.

Embeddings come through the content-keyed cache, so after ``score`` nothing is embedded again.
Results are printed and written to ``<run>/scores/compare-<A>-<B>.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.fileio import atomic_write_text
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources, embed_texts
from harness.score.embed.registry import Embedder
from harness.score.metrics import paired_bootstrap, permutation_test_sets
from harness.score.metrics.registry import Metric, MetricData, metric_class
from harness.score.reference import Reference, ReferenceOptions, resolve_reference
from harness.score.scoring import (CLAP_EMBEDDERS, ScoreError, applies, build_embedder, check_metrics, clip_loader,
                                   paired_only, parse_embedders, parse_metrics, resolve_cell)
from harness.store import inside_run, read_store, require_intact_audio

__all__ = ["DEFAULT_METRICS", "CompareResult", "Comparison", "compare_cells", "print_comparison"]

# Tested when --metrics is not given, on each embedder that can feed them.
DEFAULT_METRICS = ("fad", "kad", "clap_score", "kl_softmax", "kl_sigmoid", "inception_score")


@dataclass
class Comparison:
    """One metric of one embedder: A, B, their difference and how sure it is."""

    embedder: str
    metric: str
    value_a: float
    value_b: float
    diff: float  # A - B
    p_value: float
    test: str
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None  # pairs tested (KL: those whose prompt has a reference clip)


@dataclass
class CompareResult:
    """Everything ``compare_cells`` found, and where it was written."""

    cell_a: str
    cell_b: str
    reference: str
    n_pairs: int
    rows: list[Comparison] = field(default_factory=list)
    path: Path | None = None
    pair_by: str | None = None
    notes: list[str] = field(default_factory=list)  # metrics skipped, pairs left out, and why


def compare_cells(run_dir: str | Path, cell_a: str, cell_b: str, reference: str,
                  embedders: str | Sequence[str] = ("mel",), *, metrics: str | Sequence[str] | None = None,
                  pair_by: str | None = None, clap_model: str | None = None,
                  weights: dict[str, str] | None = None,
                  device: str = "cpu", permutations: int = 999, bootstrap: int = 2000, seed: int = 0,
                  cache_dir: str | Path | None = None, follow_external_links: bool = False,
                  progress: bool = False) -> CompareResult:
    """Paired tests of cell A against cell B (unique id prefixes accepted); see the module docstring.

    ``metrics``: registered metric names (None: ``DEFAULT_METRICS`` the embedders support);
    ``pair_by``: how reference files pair with prompts, as ``score`` (``harness.data.pairing``).
    """
    explicit = metrics is not None
    metric_names = parse_metrics(metrics) if explicit else list(DEFAULT_METRICS)
    root = Path(run_dir)
    with read_store(root) as store:
        samples = store.samples()
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_cell.setdefault(s["cell_id"], []).append(s)
    cells = sorted(by_cell)
    a, b = resolve_cell(cell_a, cells), resolve_cell(cell_b, cells)
    if a == b:
        raise ScoreError(f"cell A and cell B are the same cell ({a}); name two different cells")
    pairs = _pairs(samples, a, b)
    # score's own reference path: folder ingestion, --pair-by parsing and pairing, cell: references.
    ref = resolve_reference(reference, root, by_cell, [a, b],
                            ReferenceOptions(pair_by=pair_by, follow_external_links=follow_external_links))
    options = {n: {"weights": path} for n, path in (weights or {}).items()}
    if clap_model:
        options.update({n: {"model": clap_model} for n in CLAP_EMBEDDERS})
    built = [build_embedder(n, options.get(n, {}), device) for n in parse_embedders(embedders)]
    plan = [([m for m in metric_names if applies(metric_class(m), e)], e) for e in built]
    notes: list[str] = []
    if explicit:  # score's one-line errors (no embedder with logits, KL without a paired reference), then text
        check_metrics([(metric_names, e) for e in built], ref)
        unfed = [m for m in metric_names if not any(m in names for names, _ in plan)]
        if unfed:
            raise ScoreError(f"{unfed[0]} needs an embedder with a text encoder (clap, tiny-clap); none of "
                             f"{', '.join(e.name for e in built)} has one")
    else:
        plan = _drop_unpaired(plan, ref, notes)
    cache = EmbeddingCache(root / "embeddings" if cache_dir == "run" else cache_dir)
    rows = [p["a"] for p in pairs] + [p["b"] for p in pairs]
    require_intact_audio(root, rows)
    sources = [AudioSource(str(p), clip_loader(p)) for p in (inside_run(root, r["audio_path"]) for r in rows)]
    ref_rows = _add_reference_sources(root, ref, by_cell, sources)
    from tqdm.auto import tqdm

    with tqdm(total=len(sources), desc="embedding", unit="clip", disable=not progress) as bar:
        emb = embed_sources(sources, built, cache, progress=bar.update)
    if emb.errors:
        raise ScoreError(f"{len(emb.errors)} clip(s) could not be embedded, e.g. {next(iter(emb.errors.values()))}")
    result = CompareResult(a, b, reference, len(pairs), pair_by=pair_by, notes=notes)
    n = len(pairs)
    prompts = [p["a"]["prompt_id"] for p in pairs] * 2
    keys = [(p["a"]["prompt_id"], p["a"]["seed"]) for p in pairs] * 2
    for names, e in plan:
        outputs = {"embedding": emb.embeddings[e.name], **emb.outputs.get(e.name, {})}
        pooling = getattr(e, "pooling", "clip-mean")
        # Rows 0..n-1 are A's, n..2n-1 B's; the reference is a set (its clips, or a cell's ok samples).
        data = MetricData({o: v[:2 * n] for o, v in outputs.items()}, prompts, keys, pooling,
                          {o: [v[i] for i in ref.source_index] for o, v in outputs.items()}, seed=seed)
        for name in names:
            metric = metric_class(name)()
            try:
                if metric.kind == "set":
                    metric.check(_cell_a(data, n))  # e.g. IS: >= 10 clips per cell
                    result.rows.append(_set_test(e.name, metric, data, n, permutations, seed))
                    continue
                d = data
                if "text" in metric.needs:
                    texts = embed_texts([p["a"]["prompt"] for p in pairs], e, cache, emb)
                    d = replace(data, texts=np.concatenate([texts, texts]))
                elif "paired_reference" in metric.needs:
                    d = _paired_data(ref, rows, data, outputs, ref_rows, notes, e.name, name)
                metric.check(d)
                result.rows.append(_mean_test(e.name, metric, d, bootstrap, seed))
            except ValueError as err:  # a check (too few clips, no paired clip) or the test itself
                if explicit:
                    raise ScoreError(f"{name} on {e.name}: {err}") from None
                notes.append(f"{name} on {e.name} skipped: {err}")
    result.path = _write(root, result)
    return result


def _drop_unpaired(plan: list[tuple[list[str], Embedder]], ref: Reference,
                   notes: list[str]) -> list[tuple[list[str], Embedder]]:
    """Default metrics: paired ones are skipped, with one line, when the reference is unpaired."""
    if ref.paired:
        return plan
    paired = sorted({m for names, _ in plan for m in names if "paired_reference" in metric_class(m).needs})
    if paired:
        notes.append(f"{', '.join(paired)} skipped: {ref.label} is unpaired; pass --pair-by "
                     "stem|audiocaps:CSV|manifest:CSV (or a cell: reference) to test them")
    return [([m for m in names if m not in paired], e) for names, e in plan]


def _add_reference_sources(root: Path, ref: Reference, by_cell: dict[str, list[dict[str, Any]]],
                           sources: list[AudioSource]) -> list[dict[str, Any]] | None:
    """Append the reference's clips to ``sources`` (``ref.source_index`` says where); a cell's ok rows."""
    if ref.cell_id is None:
        ref.add_sources(sources)
        return None
    ref_rows = [s for s in by_cell[ref.cell_id] if s["status"] == "ok"]
    require_intact_audio(root, ref_rows)
    for r in ref_rows:
        path = inside_run(root, r["audio_path"])
        ref.source_index.append(len(sources))
        sources.append(AudioSource(str(path), clip_loader(path)))
    return ref_rows


def _pairs(samples: list[dict[str, Any]], a: str, b: str) -> list[dict[str, dict]]:
    ok = {(s["cell_id"], s["prompt_id"], s["seed"]): s for s in samples if s["status"] == "ok"}
    keys = sorted({(p, sd) for c, p, sd in ok if c == a} & {(p, sd) for c, p, sd in ok if c == b})
    if len(keys) < 2:
        raise ScoreError(f"cells {a} and {b} share {len(keys)} ok (prompt, seed) pair(s); a paired test needs >= 2")
    return [{"a": ok[(a, p, sd)], "b": ok[(b, p, sd)]} for p, sd in keys]


def _cell_a(data: MetricData, n: int) -> MetricData:
    """Cell A's rows alone: what a per-cell check (sample counts) sees."""
    return replace(data, x={o: v[:n] for o, v in data.x.items()}, prompts=data.prompts[:n], keys=data.keys[:n],
                   _by_prompt=None)


def _paired_data(ref: Reference, rows: list[dict[str, Any]], data: MetricData, outputs: dict[str, list],
                 ref_rows: list[dict[str, Any]] | None, notes: list[str], embedder: str, metric: str) -> MetricData:
    """A and B rows with their paired reference clips, as score pairs them: the same pairs drop out of both."""
    d, extra = paired_only(*ref.metric_data(rows, data.x, outputs, ref_rows, data.pooling, data.seed))
    n, m = len(rows) // 2, d.n // 2
    # A's and B's rows share (prompt, seed) in order, so whatever pairing keeps, it keeps for both.
    assert d.keys[:m] == d.keys[m:] and d.n == 2 * m, "paired rows of A and B went out of step"
    if m < n:
        why = (f"{len(extra.get('unmatched_prompts', []))} prompt(s) without a reference clip" if ref.pairing
               else f"{ref.label} lacks them")
        notes.append(f"{metric} on {embedder}: {m} of {n} pairs ({why})")
    return d


def _set_test(name: str, metric: Metric, data: MetricData, n: int, permutations: int, seed: int) -> Comparison:
    """Paired permutation test of a registered set metric; the reference state stays fixed."""
    rows_a, rows_b = np.arange(n)[:, None], np.arange(n, 2 * n)[:, None]
    state = metric.prepare(data)

    def fn(idx, _ref):
        return metric.on_rows(state, data, np.ravel(idx), None)

    res = permutation_test_sets(rows_a, rows_b, np.zeros((1, 1)), fn, paired=True, n_permutations=permutations,
                                seed=seed)
    return Comparison(name, metric.name, res.value_a, res.value_b, res.statistic, res.p_value,
                      f"paired permutation ({res.n_permutations} label swaps within pairs)", n=n)


def _mean_test(name: str, metric: Metric, data: MetricData, bootstrap: int, seed: int) -> Comparison:
    """Paired bootstrap of the registered per-sample values, A's first half against B's second."""
    scores = np.asarray(metric.per_sample(data), dtype=np.float64)
    m = data.n // 2
    a, b = scores[:m], scores[m:]
    res = paired_bootstrap(a, b, n_resamples=bootstrap, seed=seed)
    return Comparison(name, metric.name, float(a.mean()), float(b.mean()), res.mean_diff, res.p_value,
                      f"paired bootstrap ({res.method})", res.low, res.high, n=m)


def _write(root: Path, result: CompareResult) -> Path:
    path = root / "scores" / f"compare-{result.cell_a[:8]}-{result.cell_b[:8]}.json"
    payload = {k: v for k, v in asdict(result).items() if k != "path"}
    return atomic_write_text(path, json.dumps(payload, indent=1, default=float) + "\n")


def print_comparison(result: CompareResult) -> None:
    """Table of the comparisons, then the file they were written to."""
    from rich.table import Table

    from harness.console import make_console

    table = Table("embedder", "metric", "n", "A", "B", "A - B", "95% CI", "p", "test",
                  title=f"cell {result.cell_a} (A) vs cell {result.cell_b} (B), {result.n_pairs} pairs")
    for r in result.rows:
        ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if r.ci_low is not None else "-"
        table.add_row(r.embedder, r.metric, str(r.n if r.n is not None else result.n_pairs), f"{r.value_a:.4g}",
                      f"{r.value_b:.4g}", f"{r.diff:+.4g}", ci, f"{r.p_value:.3g}", r.test)
    console = make_console()
    console.print(table)
    for note in result.notes:
        console.print(note, highlight=False, soft_wrap=True, markup=False)
    paired = f" (paired by {result.pair_by})" if result.pair_by else ""
    console.print(f"reference: {result.reference}{paired}; written to {result.path}", highlight=False, soft_wrap=True)
