"""Paired comparison of two cells of one run: is cell A's quality really different from B's?

Both cells are compared on the (prompt, seed) pairs they share, so prompt mix and seeds cancel:

* CLAP score (embedders with a text encoder): paired bootstrap of the mean per-sample difference
  A - B (``harness.score.metrics.bootstrap.paired_bootstrap``), with its CI and two-sided p-value;
* FAD and KAD against the reference: permutation test of metric(A) - metric(B) that swaps the
  A/B labels within each pair (``permutation_test_sets(paired=True)``); the reference statistics
  (and KAD's bandwidth, the median distance of the reference) are fixed across permutations.

Embeddings come through the content-keyed cache, so after ``score`` nothing is embedded again.
Results are printed and written to ``<run>/scores/compare-<A>-<B>.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness.fileio import atomic_write_text
from harness.score.embed.cache import AudioSource, EmbeddingCache, embed_sources, embed_texts
from harness.score.metrics import paired_bootstrap, permutation_test_sets
from harness.score.metrics.registry import MetricData, metric_class
from harness.score.reference import ReferenceOptions, resolve_reference
from harness.score.scoring import CLAP_EMBEDDERS, ScoreError, build_embedder, clip_loader, parse_embedders, resolve_cell
from harness.store import inside_run, read_store, require_intact_audio

# Set metrics tested by label permutation; CLAP score is tested by a paired bootstrap.
SET_METRICS = ("fad", "kad")


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


@dataclass
class CompareResult:
    """Everything ``compare_cells`` found, and where it was written."""

    cell_a: str
    cell_b: str
    reference: str
    n_pairs: int
    rows: list[Comparison] = field(default_factory=list)
    path: Path | None = None


def compare_cells(run_dir: str | Path, cell_a: str, cell_b: str, reference: str,
                  embedders: str | Sequence[str] = ("mel",), *, clap_model: str | None = None,
                  weights: dict[str, str] | None = None,
                  device: str = "cpu", permutations: int = 999, bootstrap: int = 2000, seed: int = 0,
                  cache_dir: str | Path | None = None, follow_external_links: bool = False,
                  progress: bool = False) -> CompareResult:
    """Paired tests of cell A against cell B (unique id prefixes accepted); see the module docstring."""
    root = Path(run_dir)
    with read_store(root) as store:
        samples = store.samples()
    cells = sorted({s["cell_id"] for s in samples})
    a, b = resolve_cell(cell_a, cells), resolve_cell(cell_b, cells)
    if a == b:
        raise ScoreError(f"cell A and cell B are the same cell ({a}); name two different cells")
    pairs = _pairs(samples, a, b)
    ref_paths = _reference_paths(root, reference, samples, [a, b], follow_external_links)
    options = {n: {"weights": path} for n, path in (weights or {}).items()}
    if clap_model:
        options.update({n: {"model": clap_model} for n in CLAP_EMBEDDERS})
    built = [build_embedder(n, options.get(n, {}), device) for n in parse_embedders(embedders)]
    cache = EmbeddingCache(root / "embeddings" if cache_dir == "run" else cache_dir)
    rows = [p["a"] for p in pairs] + [p["b"] for p in pairs]
    require_intact_audio(root, rows)
    paths = [inside_run(root, r["audio_path"]) for r in rows] + ref_paths
    from tqdm.auto import tqdm

    with tqdm(total=len(paths), desc="embedding", unit="clip", disable=not progress) as bar:
        emb = embed_sources([AudioSource(str(p), clip_loader(p)) for p in paths], built, cache, progress=bar.update)
    if emb.errors:
        raise ScoreError(f"{len(emb.errors)} clip(s) could not be embedded, e.g. {next(iter(emb.errors.values()))}")
    result = CompareResult(a, b, reference, len(pairs))
    n = len(pairs)
    prompts = [p["a"]["prompt_id"] for p in pairs] * 2
    keys = [(p["a"]["prompt_id"], p["a"]["seed"]) for p in pairs] * 2
    for e in built:
        arrays = emb.embeddings[e.name]
        data = MetricData({"embedding": arrays[:2 * n]}, prompts, keys, getattr(e, "pooling", "clip-mean"),
                          {"embedding": arrays[2 * n:]}, seed=seed)
        result.rows += _set_tests(e.name, data, n, permutations, seed)
        if e.supports_text:
            texts = embed_texts([p["a"]["prompt"] for p in pairs], e, cache, emb)
            clap = metric_class("clap_score")()
            scores = clap.per_sample(MetricData({"embedding": arrays[:2 * n]}, prompts, keys, data.pooling,
                                                texts=np.concatenate([texts, texts])))
            result.rows.append(_clap_test(e.name, scores[:n], scores[n:], bootstrap, seed))
    result.path = _write(root, result)
    return result


def _pairs(samples: list[dict[str, Any]], a: str, b: str) -> list[dict[str, dict]]:
    ok = {(s["cell_id"], s["prompt_id"], s["seed"]): s for s in samples if s["status"] == "ok"}
    keys = sorted({(p, sd) for c, p, sd in ok if c == a} & {(p, sd) for c, p, sd in ok if c == b})
    if len(keys) < 2:
        raise ScoreError(f"cells {a} and {b} share {len(keys)} ok (prompt, seed) pair(s); a paired test needs >= 2")
    return [{"a": ok[(a, p, sd)], "b": ok[(b, p, sd)]} for p, sd in keys]


def _reference_paths(root: Path, reference: str, samples, cells: list[str],
                     follow_external_links: bool = False) -> list[Path]:
    """The reference's audio files: a folder's usable clips, or a cell's ok samples (as a set)."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_cell.setdefault(s["cell_id"], []).append(s)
    ref = resolve_reference(reference, root, by_cell, cells, ReferenceOptions(follow_external_links=follow_external_links))
    if ref.cell_id is not None:
        rows = [s for s in by_cell[ref.cell_id] if s["status"] == "ok"]
        require_intact_audio(root, rows)
        return [inside_run(root, s["audio_path"]) for s in rows]
    return [ref.reference_set.root / e.path for e in ref.reference_set.entries]


def _set_tests(name: str, data: MetricData, n: int, permutations: int, seed: int) -> list[Comparison]:
    """Paired permutation tests of the registered set metrics; the reference state stays fixed."""
    out = []
    rows_a, rows_b = np.arange(n)[:, None], np.arange(n, 2 * n)[:, None]
    for metric_name in SET_METRICS:
        metric = metric_class(metric_name)()
        state = metric.prepare(data)

        def fn(idx, _ref, metric=metric, state=state):
            return metric.on_rows(state, data, np.ravel(idx), None)

        res = permutation_test_sets(rows_a, rows_b, np.zeros((1, 1)), fn, paired=True,
                                    n_permutations=permutations, seed=seed)
        out.append(Comparison(name, metric_name, res.value_a, res.value_b, res.statistic, res.p_value,
                              f"paired permutation ({res.n_permutations} label swaps within pairs)"))
    return out


def _clap_test(name: str, a: np.ndarray, b: np.ndarray, bootstrap: int, seed: int) -> Comparison:
    res = paired_bootstrap(a, b, n_resamples=bootstrap, seed=seed)
    return Comparison(name, "clap_score", float(a.mean()), float(b.mean()), res.mean_diff, res.p_value,
                      f"paired bootstrap ({res.method})", res.low, res.high)


def _write(root: Path, result: CompareResult) -> Path:
    path = root / "scores" / f"compare-{result.cell_a[:8]}-{result.cell_b[:8]}.json"
    payload = {k: v for k, v in asdict(result).items() if k != "path"}
    return atomic_write_text(path, json.dumps(payload, indent=1, default=float) + "\n")


def print_comparison(result: CompareResult) -> None:
    """Table of the comparisons, then the file they were written to."""
    from rich.table import Table

    from harness.console import make_console

    table = Table("embedder", "metric", "A", "B", "A - B", "95% CI", "p", "test",
                  title=f"cell {result.cell_a} (A) vs cell {result.cell_b} (B), {result.n_pairs} pairs")
    for r in result.rows:
        ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if r.ci_low is not None else "-"
        table.add_row(r.embedder, r.metric, f"{r.value_a:.4g}", f"{r.value_b:.4g}", f"{r.diff:+.4g}", ci,
                      f"{r.p_value:.3g}", r.test)
    console = make_console()
    console.print(table)
    console.print(f"reference: {result.reference}; written to {result.path}", highlight=False, soft_wrap=True)
