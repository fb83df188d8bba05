"""The metric registry: one small class per metric, registered by name, like the embedder registry.

A metric says what it needs (``needs``: embeddings of the scored clips, a reference set, a
reference clip paired with each prompt, the prompts' text embeddings; ``output``: which embedder
output it reads, ``embedding`` or ``logits``), how its value is made (``kind``):

* ``mean``: ``per_sample(data)`` gives one value per scored sample and the metric is their mean
  (CLAP score, KL); its CI is a BCa bootstrap of the mean over prompts;
* ``set``: ``prepare(data)`` fixes what does not change under resampling (the reference
  Gaussian, KAD's bandwidth) and ``on_rows(state, data, samples, reference)`` computes the
  statistic on a subset of samples (FAD, KAD, Inception Score); its CI is a percentile
  bootstrap over prompts,

and ``details(state, data)`` adds what a reader needs beside the value. ``Metric.evaluate``
does the rest (value, CI, errors), the same for every metric. Adding a metric is adding a
module to ``harness/score/metrics/`` that defines a ``@register``-ed subclass.

Resampling unit: prompts. A resample draws prompts with replacement and takes every scored seed
of each (seeds of one prompt are not independent draws); a baseline-cell reference is resampled
with the same prompts (its rows are the same (prompt, seed) pairs).
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from harness.plugins import add, import_modules
from harness.score.metrics.bootstrap import bootstrap_ci, set_metric_ci

__all__ = ["NEEDS", "Metric", "MetricData", "MetricValue", "available_metrics", "get_metric", "register"]

# What a metric can need; scoring checks these before it embeds anything.
NEEDS = ("embeddings", "reference", "paired_reference", "text")
_INFRASTRUCTURE = {"registry", "bootstrap"}
_REGISTRY: dict[str, type[Metric]] = {}
_discovered = False

SET_CI_NOTE = ("the percentile interval excludes the point estimate: resampled sets repeat clips, "
               "which biases set metrics such as FAD upward; it shows the spread over prompt samples, "
               "not a bias-corrected interval")
MEAN_CI_NOTE = "the interval excludes the point estimate (a very skewed bootstrap distribution)"


@dataclass
class MetricData:
    """What a metric sees for one cell and one embedder.

    ``x[output]``: one (n_windows, width) array per scored sample; ``y[output]``: one per
    reference clip. ``aligned``: the reference is a baseline cell and ``y`` row i is sample i's
    own (prompt, seed) there. ``pair``: per sample, the index into ``y`` of the reference clip
    paired with its prompt (None: unmatched), or None when the reference is not paired.
    """

    x: dict[str, list[np.ndarray]]
    prompts: list[str]
    keys: list[tuple[str, int]]
    pooling: str = "clip-mean"
    y: dict[str, list[np.ndarray]] | None = None
    aligned: bool = False
    pair: list[int | None] | None = None
    texts: np.ndarray | None = None
    seed: int = 0
    _by_prompt: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Scored samples."""
        return len(self.prompts)

    def by_prompt(self) -> list[np.ndarray]:
        """Sample indices per distinct prompt, in first-appearance order (the resampling units)."""
        if self._by_prompt is None:
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(self.prompts):
                groups.setdefault(p, []).append(i)
            self._by_prompt = [np.asarray(v) for v in groups.values()]
        return self._by_prompt

    def samples_of(self, prompt_idx: np.ndarray) -> np.ndarray:
        """Sample indices of the drawn prompts (with repeats)."""
        groups = self.by_prompt()
        return np.concatenate([groups[int(i)] for i in np.ravel(prompt_idx)])

    def rows(self, arrays: list[np.ndarray], idx: np.ndarray | None = None) -> np.ndarray:
        """(rows, width) float64 set rows of the clips ``idx`` (all: None), pooled by ``pooling``."""
        chosen = arrays if idx is None else [arrays[int(i)] for i in idx]
        if not chosen:
            return np.zeros((0, 0))
        if self.pooling == "frames":
            return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1]) for a in chosen])
        return np.stack([np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1]).mean(axis=0) for a in chosen])


@dataclass
class MetricValue:
    """A metric's value, its CI (None without one) and details."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    details: dict[str, Any]


class Metric(ABC):
    """Base class: class attributes describe the metric; see the module docstring."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    output: ClassVar[str] = "embedding"
    needs: ClassVar[frozenset[str]] = frozenset({"embeddings", "reference"})
    kind: ClassVar[str] = "set"
    higher_is_better: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options

    # --- to override ---------------------------------------------------------------------------
    def per_sample(self, data: MetricData) -> np.ndarray:
        """Mean metrics: one value per scored sample."""
        raise NotImplementedError

    def prepare(self, data: MetricData) -> Any:
        """Set metrics: what stays fixed across resamples (e.g. the reference statistics)."""
        return None

    def on_rows(self, state: Any, data: MetricData, samples: np.ndarray, reference: np.ndarray | None) -> float:
        """Set metrics: the statistic on the samples ``samples`` (and, aligned, reference rows ``reference``)."""
        raise NotImplementedError

    def details(self, state: Any, data: MetricData) -> dict[str, Any]:
        """Extra details of the row (method, rank, ...); ``state`` is ``prepare``'s result for set
        metrics and the per-sample values for mean metrics."""
        return {}

    def check(self, data: MetricData) -> None:
        """Raise ValueError when ``data`` cannot give a value (too few samples, ...)."""
        if self.kind == "set" and "reference" in self.needs:
            ny = len(data.y[self.output]) if data.y else 0
            if data.n < 2 or ny < 2:
                raise ValueError(f"{self.name} needs >= 2 samples and >= 2 reference clips; have {data.n} and {ny}")

    # --- shared ------------------------------------------------------------------------------------
    def evaluate(self, data: MetricData, bootstrap: int, confidence: float, seed: int) -> MetricValue:
        """Value, bootstrap CI over prompts and details; a ValueError becomes ``details.error``."""
        details: dict[str, Any] = {}
        try:
            self.check(data)
            if self.kind == "mean":
                return self._evaluate_mean(data, bootstrap, confidence, seed, details)
            return self._evaluate_set(data, bootstrap, confidence, seed, details)
        except ValueError as err:
            details["error"] = str(err)
            return MetricValue(None, None, None, data.n, details)

    def _evaluate_mean(self, data, bootstrap, confidence, seed, details) -> MetricValue:
        scores = np.asarray(self.per_sample(data), dtype=np.float64)
        value = float(np.mean(scores))
        details.update(self.details(scores, data))
        low = high = None
        units = data.by_prompt()
        if bootstrap and len(units) >= 2:
            def mean_of(idx):
                return float(np.mean(scores[data.samples_of(idx)]))

            res = bootstrap_ci(np.arange(len(units), dtype=np.float64), mean_of, confidence=confidence,
                               n_resamples=bootstrap, seed=seed)
            low, high = res.low, res.high
            details["ci"] = ci_details(res, value, bootstrap, seed, MEAN_CI_NOTE)
        elif bootstrap:
            details["ci"] = {"error": "a bootstrap over prompts needs >= 2 prompts"}
        return MetricValue(value, low, high, data.n, details)

    def _evaluate_set(self, data, bootstrap, confidence, seed, details) -> MetricValue:
        state = self.prepare(data)
        everything = np.arange(data.n)
        value = float(self.on_rows(state, data, everything, everything if data.aligned else None))
        details.update(self.details(state, data))
        low = high = None
        units = data.by_prompt()
        if bootstrap and len(units) >= 2:
            def fn(ix, iy):
                samples = data.samples_of(ix)
                return self.on_rows(state, data, samples, data.samples_of(iy) if data.aligned else None)

            idx = np.arange(len(units))[:, None]
            res = set_metric_ci(idx, idx, fn, paired=True, confidence=confidence, n_resamples=bootstrap, seed=seed)
            low, high = res.low, res.high
            details["ci"] = ci_details(res, value, bootstrap, seed, SET_CI_NOTE)
        elif bootstrap:
            details["ci"] = {"error": "a bootstrap over prompts needs >= 2 prompts"}
        return MetricValue(value, low, high, data.n, details)


def ci_details(res, value: float, bootstrap: int, seed: int, note: str) -> dict[str, Any]:
    """The ``details.ci`` entry of a row: method, resamples, seed, unit, whether it holds the value."""
    inside = bool(res.low <= value <= res.high)
    info = {"method": res.method, "n_resamples": bootstrap, "seed": seed, "unit": "prompts",
            "standard_error": res.standard_error, "contains_value": inside}
    if not inside:
        info["note"] = note
    return info


M = TypeVar("M", bound=type[Metric])


def register(cls: M) -> M:
    """Class decorator: add a ``Metric`` subclass to the registry under ``cls.name``."""
    unknown = set(cls.needs) - set(NEEDS)
    if unknown or cls.kind not in ("set", "mean"):
        raise TypeError(f"{cls.__name__}: bad needs {sorted(unknown)} or kind {cls.kind!r}")
    add(_REGISTRY, cls, "metric")
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import_modules("harness.score.metrics", _INFRASTRUCTURE)
    _discovered = True


def available_metrics() -> list[str]:
    """Registered metric names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def metric_class(name: str) -> type[Metric]:
    """The class registered as ``name``; ValueError listing the valid names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(available_metrics())}")
    return _REGISTRY[name]


def get_metric(name: str, **options: Any) -> Metric:
    """An instance of the metric registered as ``name``."""
    return metric_class(name)(**options)
