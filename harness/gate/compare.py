"""Verdicts: a candidate summary against a baseline summary under a policy.

Every gated figure gets one of three verdicts from two one-sided tests against the allowance
(the baseline moved by ``max_regression``), each at ``alpha = 1 - confidence``:

* **regression** (fail): the data show the candidate is worse than the allowance permits (the
  test of "worse than the moved baseline" rejects its null at alpha);
* **pass** (or **improved**, when it is also better than the baseline beyond doubt): the data
  show the change is within the allowance (the test of "better than the moved baseline" rejects);
* **inconclusive**: neither, e.g. +35 % with a test at p = 0.42: more observations are needed,
  and the verdict says about how many, from the observed spread.

The table shows the confidence interval of the change, found by inverting the same tests: the
changes s for which neither "worse than the baseline moved by s" nor "better than it" is rejected
(a two-sided 1 - 2 alpha interval: 90 % at confidence = 0.95). A regression is an interval
wholly beyond the allowance, a pass one wholly within. Rules with ``significance = false`` and
figures without uncertainty data (one number, e.g. a memory peak) use the threshold alone, and
the verdict says so. ``alpha`` holds per figure; ``correction = "bonferroni"`` divides it by the
number of gated figures. The test is the strongest the data allow:

1. paired observations (same keys on both sides: per-sample CLAP scores of the same prompts and
   seeds, or the rounds of an interleaved A/B session): Wilcoxon signed-rank test on log ratios
   for latency-like figures, paired bootstrap of the mean difference for the rest;
2. a baseline saved from 3 or more runs: the candidate's value against the spread of the
   baseline's per-run values (one-sided t prediction test, on logs for latency-like figures),
   so drift between runs is not mistaken for a regression;
3. unpaired observations (per-call latencies): Mann-Whitney U;
4. confidence intervals only (FAD, KAD): normal approximation from the two intervals;
5. mean, standard deviation and n (pytest-benchmark without saved data): Welch's t-test;
6. nothing (one number, e.g. a memory peak): the threshold alone, and the verdict says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import scipy.stats

from harness.environment import environment_differences as env_differences
from harness.errors import HarnessError
from harness.gate.policy import Policy, Rule
from harness.gate.summary import Figure, Summary, non_finite
from harness.results import figure_stem
from harness.score.metrics.bootstrap import paired_bootstrap

Status = Literal["pass", "improved", "regression", "inconclusive", "missing", "incomparable"]
FAILING: tuple[Status, ...] = ("regression", "missing")
# Exit codes of a gate (the README's table): 2 stays "cannot compare / bad input".
EXIT_PASS, EXIT_FAIL, EXIT_INCOMPARABLE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


@dataclass(frozen=True)
class Test:
    """A significance test's name, its one-sided p-value (None: no test possible), the
    smallest p-value it could give with this many observations, and that number of observations."""

    name: str
    p: float | None
    floor: float = 0.0
    n: int = 0


class GateError(HarnessError, ValueError):
    """The two summaries cannot be compared (e.g. different environments); exit 2."""


@dataclass
class Verdict:
    """The judgement of one figure of one cell."""

    cell: str
    label: str
    figure: str
    status: Status
    baseline: float | None = None
    candidate: float | None = None
    change: float | None = None  # signed, positive = worse; relative when the rule is
    allowed: str = ""
    test: str = ""
    p_value: float | None = None  # of "worse than the allowance" (small: regression)
    unit: str = ""
    p_within: float | None = None  # of "better than the allowance" (small: pass)
    interval: tuple[float, float] | None = None  # CI of the change, same scale as ``change``
    interval_level: float | None = None  # its two-sided coverage (1 - 2 alpha)
    needed: str = ""  # inconclusive: what would likely decide it


@dataclass
class GateResult:
    """All verdicts, plus what was compared and what was not gated."""

    verdicts: list[Verdict]
    environment_differences: list[str] = field(default_factory=list)
    ungated: int = 0
    new_cells: list[str] = field(default_factory=list)
    inconclusive_policy: Literal["fail", "warn"] = "warn"
    notes: list[str] = field(default_factory=list)  # e.g. how a sequential session went

    @property
    def exit_code(self) -> int:
        """1 regression (or a baseline cell missing), else 2 if a figure cannot be compared, else 3
        if a figure is inconclusive and the policy says ``inconclusive = "fail"``, else 0.

        A regression wins over a data error: CI set-ups that read 2 as "infrastructure problem"
        must not wave a real regression through because another figure was incomparable.
        """
        statuses = {v.status for v in self.verdicts}
        if statuses & set(FAILING):
            return EXIT_FAIL
        if "incomparable" in statuses:
            return EXIT_INCOMPARABLE
        if "inconclusive" in statuses and self.inconclusive_policy == "fail":
            return EXIT_INCONCLUSIVE
        return EXIT_PASS


def environment_differences(baseline: Summary, candidate: Summary) -> list[str]:
    """'key: baseline != candidate' for every environment key that differs."""
    return env_differences(baseline.environment_key(), candidate.environment_key())


def compare(baseline: Summary, candidate: Summary, policy: Policy, allow_env_mismatch: bool = False,
            alpha: float | None = None, intervals: bool = True) -> GateResult:
    """Judge every gated figure of every baseline cell (``alpha`` overrides the policy's, e.g. per look)."""
    diffs = environment_differences(baseline, candidate)
    if diffs and not allow_env_mismatch:
        raise GateError(f"baseline and candidate were measured in different environments ({'; '.join(diffs)}); "
                        "save a baseline in this environment, or pass --allow-env-mismatch to compare anyway")
    result = GateResult([], diffs, new_cells=sorted(set(candidate.cells) - set(baseline.cells)),
                        inconclusive_policy=policy.inconclusive)
    gated = [(key, cell, name, fig, policy.rule_for(name)) for key, cell in baseline.cells.items()
             for name, fig in sorted(cell.figures.items())]
    result.ungated = sum(rule is None for *_, rule in gated)
    gated = [g for g in gated if g[-1] is not None]
    alpha = policy.alpha if alpha is None else alpha
    # Bonferroni: the chance that ANY figure fails on noise stays at alpha, at the cost of power.
    if policy.correction == "bonferroni":
        alpha /= max(len(gated), 1)
    for key, base_cell, name, base_fig, rule in gated:
        cand_cell = candidate.cells.get(key)
        cand_fig = None if cand_cell is None else candidate_figure(cand_cell.figures, name, base_fig)
        if cand_fig is None:
            where = "cell" if cand_cell is None else "figure"
            result.verdicts.append(Verdict(key, base_cell.label, name, "missing", base_fig.value,
                                           allowed=rule.describe(), test=f"{where} not in candidate"))
        else:
            result.verdicts.append(judge(key, base_cell.label, name, base_fig, cand_fig, rule, alpha, intervals))
    if any(v.status == "regression" and v.test.startswith("Mann-Whitney") for v in result.verdicts):
        result.notes.append(DRIFT_NOTE)
    if not result.verdicts:  # a gate that judged nothing must not pass
        names = sorted({n for c in baseline.cells.values() for n in c.figures})
        raise GateError(f"no figure was gated: no rule of the policy matches any of the baseline's {len(names)} "
                        f"figure name(s) ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                        "fix the rules' figure patterns")
    return result


# Per-call times of one run against another see the spread within each run, not the runner's
# speed drifting between them (benchmarks/RESULTS.md: 4 of 20 identical runs failed that way on a
# loaded machine; 0 of 20 against a 5-run baseline).
DRIFT_NOTE = ("latency judged on per-call times of a one-run baseline: drift of the runner's speed between "
              "runs is not counted; confirm with `gate-ab` (interleaved) or a baseline saved from 3 or more runs")


def candidate_figure(figures: dict[str, Figure], name: str, base: Figure) -> Figure | None:
    """The candidate's figure for the baseline's ``name``: by name, else by identity.

    A quality figure's name gets ``@<reference>`` / ``#<embedder>`` suffixes only where one run
    holds several rows of that metric and embedder (e.g. scored plainly and under a protocol), so
    the same figure may be named differently in the baseline and the candidate; it is the same
    figure when the stem, embedder identity and reference agree."""
    if name in figures:
        return figures[name]
    if base.embedder_id is None:
        return None
    stem = figure_stem(name)
    same = [f for n, f in figures.items() if figure_stem(n) == stem and f.embedder_id == base.embedder_id
            and f.reference_id == base.reference_id]
    return same[0] if len(same) == 1 else None


def judge(cell: str, label: str, name: str, base: Figure, cand: Figure, rule: Rule, alpha: float,
          interval: bool = True) -> Verdict:
    """Verdict on one figure: beyond the allowance (regression), within it (pass), or undecided."""
    verdict = Verdict(cell, label, name, "incomparable", base.value, cand.value, allowed=rule.describe(),
                      unit=base.unit)
    better = rule.better or base.better
    problem = _incomparable(base, cand, better)
    if problem:
        verdict.test = problem
        return verdict
    worse = (cand.value - base.value) * (1 if better == "lower" else -1)
    verdict.change = _relative(worse, base.value) if rule.relative is not None else worse
    limit = rule.relative if rule.relative is not None else rule.absolute
    beyond = verdict.change > limit
    if not rule.significance:
        verdict.test = "threshold alone (significance = false)"
        verdict.status = "regression" if beyond else "pass"
        return verdict
    shift = Shift(base, rule, better)
    test = significance(shift.moved(limit), cand, better)
    verdict.test, verdict.p_value = test.name, test.p
    if test.p is None:  # one number a side: nothing to test with
        verdict.status = "regression" if beyond else "pass"
        return verdict
    within = significance(shift.moved(limit), cand, _opposite(better))
    verdict.p_within = within.p
    if interval:
        verdict.interval, verdict.interval_level = change_interval(shift, cand, alpha), 1 - 2 * alpha
    if test.floor >= alpha:
        verdict.status = "inconclusive"  # a pass or a fail here would only mean "too few observations"
        verdict.needed = (f"too few observations: this test cannot go below p = {test.floor:.3g} >= alpha "
                          f"{alpha:g}; {_more(test, base)}")
    elif test.p < alpha:
        verdict.status = "regression"
    elif within.p is not None and within.p < alpha:
        improved = verdict.change < 0 and (significance(base, cand, _opposite(better)).p or 1.0) < alpha
        verdict.status = "improved" if improved else "pass"
    else:
        verdict.status = "inconclusive"
        verdict.needed = _needed(verdict, limit, test, base)
    return verdict


class Shift:
    """The baseline moved by a change ``s`` on the rule's scale (relative or absolute, worse > 0)."""

    def __init__(self, base: Figure, rule: Rule, better: str) -> None:
        self.base, self.better = base, better
        self.relative = rule.relative is not None
        self.sign = 1.0 if better == "lower" else -1.0

    def bounds(self) -> tuple[float, float]:
        """The changes a moved baseline can take (a latency cannot fall by 100 % or more)."""
        if self.relative and self.base.scale == "ratio":
            return (-1 + 1e-9, math.inf) if self.better == "lower" else (-math.inf, 1 - 1e-9)
        return -math.inf, math.inf

    def moved(self, s: float) -> Figure:
        """The baseline made worse by ``s`` (better when negative)."""
        base = self.base
        factor, delta = 1.0, 0.0
        if self.relative and base.scale == "ratio":  # latency-like: a multiplicative allowance
            factor = 1.0 + self.sign * s
        elif self.relative:
            delta = self.sign * s * abs(base.value)
        else:
            delta = self.sign * s

        def move(x: float | None) -> float | None:
            return None if x is None else x * factor + delta

        return replace(base, value=move(base.value), ci_low=move(base.ci_low), ci_high=move(base.ci_high),
                       std=None if base.std is None else base.std * factor,
                       samples=None if base.samples is None else [move(x) for x in base.samples],
                       run_values=None if base.run_values is None else [move(x) for x in base.run_values])


def allowance(base: Figure, rule: Rule, better: str) -> Figure:
    """The baseline moved by the allowed regression: the boundary the candidate is tested against."""
    limit = rule.relative if rule.relative is not None else rule.absolute
    return Shift(base, rule, better).moved(limit)


def _opposite(better: str) -> str:
    return "higher" if better == "lower" else "lower"


def change_interval(shift: Shift, cand: Figure, alpha: float) -> tuple[float, float]:
    """The changes neither one-sided test rejects at ``alpha``: a 1 - 2 alpha confidence interval."""
    lo_bound, hi_bound = shift.bounds()

    def worse_rejected(s: float) -> bool:  # true for small s, false from the lower bound on
        p = significance(shift.moved(s), cand, shift.better).p
        return p is not None and p < alpha

    def better_rejected(s: float) -> bool:  # false for small s, true from the upper bound on
        p = significance(shift.moved(s), cand, _opposite(shift.better)).p
        return p is not None and p < alpha

    return (_boundary(worse_rejected, lo_bound, hi_bound),
            _boundary(lambda s: not better_rejected(s), lo_bound, hi_bound))


def _boundary(below, lo_bound: float, hi_bound: float, tolerance: float = 1e-8) -> float:
    """Where a monotone predicate (true below the point, false above) switches: bracket, bisect."""
    lo, step = 0.0, 1.0
    while not below(lo):  # walk down until below the boundary (or the scale ends)
        if lo <= lo_bound or step > 1e12:
            return lo_bound if math.isfinite(lo_bound) else -math.inf
        lo, step = max(lo - step, lo_bound), step * 2
    hi, step = lo, 1.0
    while below(hi):
        if hi >= hi_bound or step > 1e12:
            return hi_bound if math.isfinite(hi_bound) else math.inf
        hi, step = min(hi + step, hi_bound), step * 2
    while hi - lo > tolerance * max(1.0, abs(lo)):  # about 27 halvings of a unit bracket
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return (lo + hi) / 2


def _observations(test: Test, base: Figure) -> str:
    name = test.name
    if name.startswith("Wilcoxon") and base.keys and base.keys[0].startswith("round-"):
        return "rounds (gate-ab --rounds, or --max-rounds to add them as needed)"
    if name.startswith("Wilcoxon") or name.startswith("paired bootstrap"):
        return "paired samples (more prompts or seeds)"
    if name.startswith("Mann-Whitney"):
        return "timed calls per side (bench --repeats)"
    if name.startswith("prediction"):
        return "baseline runs (baseline save RUN1 RUN2 ...)"
    if name.startswith("Welch"):
        return "rounds per side (pytest-benchmark --benchmark-min-rounds)"
    return "samples per side (more prompts or seeds)"


def _more(test: Test, base: Figure) -> str:
    return f"add {_observations(test, base)}"


def _needed(verdict: Verdict, limit: float, test: Test, base: Figure) -> str:
    """About how many observations would decide an inconclusive figure, from the interval's width.

    The interval's half-width shrinks as 1/sqrt(n); the estimate is its centre. It is a
    likely figure, not a promise: the spread and the centre move as observations come in.
    """
    what = _observations(test, base)
    low, high = verdict.interval or (-math.inf, math.inf)
    n = test.n
    if not (math.isfinite(low) and math.isfinite(high)) or n < 2:
        return f"not enough evidence either way; add {what}"
    centre = (low + high) / 2
    half, gap = (centre - low, centre - limit) if centre > limit else (high - centre, limit - centre)
    if gap <= 1e-12 * max(1.0, abs(limit)):
        return f"the change sits on the allowance: no likely number of {what.split(' (')[0]} decides it"
    total = math.ceil(n * (half / gap) ** 2)
    return f"about {max(total - n, 1)} more {what} would likely decide it ({max(total, n + 1)} in all; now {n})"


def _incomparable(base: Figure, cand: Figure, better: str | None) -> str:
    if better is None:
        return "no direction known for this figure: set better = \"lower\" or \"higher\" in its rule"
    if base.value is None or cand.value is None:
        return "no value on one side"
    for side, fig in (("baseline", base), ("candidate", cand)):
        if non_finite(fig):  # NaN compares false both ways: it would pass every threshold
            return f"the {side}'s {non_finite(fig)}: not a finite number"
    if base.unit != cand.unit:
        return f"measured in different units ({base.unit!r} vs {cand.unit!r}, e.g. another bench batch size)"
    if base.reference_id != cand.reference_id:
        return f"scored against different references ({base.reference_id} vs {cand.reference_id}); score both against the same"
    if base.embedder_id is None and cand.embedder_id is not None and base.reference_id is not None:
        return "the baseline does not record its embedder's identity (saved by an older harness): save it again"
    if base.embedder_id != cand.embedder_id:
        return (f"measured by different embedders ({base.embedder_id} vs {cand.embedder_id}: other weights or "
                "front end); score both with the same")
    if base.reference_id is not None and base.n != cand.n and base.scale == "difference" and base.samples is None:
        return (f"set metric over n={base.n} vs n={cand.n} samples: FAD/KAD depend on n; compare at equal n "
                "(e.g. run --retry-failed, or the same prompt and seed set)")
    return ""


def _relative(worse: float, base: float) -> float:
    if base == 0:
        return 0.0 if worse == 0 else math.copysign(math.inf, worse)
    return worse / abs(base)


def significance(base: Figure, cand: Figure, better: str) -> Test:
    """The strongest test the data allow of "the candidate is worse than ``base``" (one-sided)."""
    alternative = "greater" if better == "lower" else "less"  # candidate minus baseline, if worse
    paired = _pairs(base, cand)
    if paired is not None:
        return _paired_test(*paired, base.scale, alternative)
    if base.run_values is not None and len(base.run_values) >= 3 and np.ptp(base.run_values) > 0:
        return _prediction_test(np.asarray(base.run_values), cand.value, base.scale, alternative)
    if _enough(base.samples) and _enough(cand.samples):
        b, c = np.asarray(base.samples), np.asarray(cand.samples)
        name, floor = f"Mann-Whitney U (n={b.size}/{c.size})", 1.0 / math.comb(b.size + c.size, b.size)
        if np.ptp(np.concatenate([b, c])) == 0:
            return Test(name + ", all equal", 1.0, floor, min(b.size, c.size))
        return Test(name, float(scipy.stats.mannwhitneyu(c, b, alternative=alternative).pvalue), floor,
                    min(b.size, c.size))
    if _has_ci(base) and _has_ci(cand):
        return _ci_test(base, cand, alternative)
    if base.std is not None and cand.std is not None and (base.n or 0) > 1 and (cand.n or 0) > 1:
        if base.std == 0 and cand.std == 0:  # exact values: any difference is real
            worse = cand.value > base.value if alternative == "greater" else cand.value < base.value
            return Test(f"Welch t (n={base.n}/{cand.n}, no spread on either side)", 0.0 if worse else 1.0,
                        n=min(base.n, cand.n))
        p = scipy.stats.ttest_ind_from_stats(cand.value, cand.std, cand.n, base.value, base.std, base.n,
                                             equal_var=False, alternative=alternative).pvalue
        return Test(f"Welch t (n={base.n}/{cand.n})", float(p) if np.isfinite(p) else 1.0, n=min(base.n, cand.n))
    return Test("no uncertainty data: threshold alone", None)


def _enough(samples: list[float] | None) -> bool:
    return samples is not None and len(samples) >= 2


def _has_ci(f: Figure) -> bool:
    return f.ci_low is not None and f.ci_high is not None


def _pairs(base: Figure, cand: Figure) -> tuple[np.ndarray, np.ndarray] | None:
    if not (base.keys and cand.keys and _enough(base.samples) and _enough(cand.samples)):
        return None
    b = dict(zip(base.keys, base.samples))
    c = dict(zip(cand.keys, cand.samples))
    common = sorted(set(b) & set(c))
    if len(common) < 2:
        return None
    return np.array([b[k] for k in common]), np.array([c[k] for k in common])


def _paired_test(b: np.ndarray, c: np.ndarray, scale: str, alternative: str) -> Test:
    if scale == "ratio" and np.all(b > 0) and np.all(c > 0):
        d = np.log(c) - np.log(b)
        name, floor = f"Wilcoxon signed-rank on log ratios (n={d.size})", 0.5 ** d.size if d.size <= 50 else 0.0
        if np.all(d == 0):
            return Test(name + ", all equal", 1.0, floor, d.size)
        return Test(name, float(scipy.stats.wilcoxon(d, alternative=alternative).pvalue), floor, d.size)
    res = paired_bootstrap(c, b, n_resamples=2999, method="percentile")
    # The two-sided bootstrap p halves to a one-sided one when the shift points the tested way.
    bad = res.mean_diff > 0 if alternative == "greater" else res.mean_diff < 0
    p = res.p_value / 2 if bad else 1 - res.p_value / 2
    return Test(f"paired bootstrap (n={res.n})", float(min(1.0, p)), n=res.n)


def _prediction_test(runs: np.ndarray, value: float, scale: str, alternative: str) -> Test:
    # Is the candidate beyond what one more baseline run would plausibly give? t with k-1 df.
    if scale == "ratio" and np.all(runs > 0) and value > 0:
        runs, value = np.log(runs), math.log(value)
    k = runs.size
    t = (value - runs.mean()) / (runs.std(ddof=1) * math.sqrt(1 + 1 / k))
    p = scipy.stats.t.sf(t, k - 1) if alternative == "greater" else scipy.stats.t.cdf(t, k - 1)
    return Test(f"prediction t vs {k} baseline runs", float(p), n=k)


def _ci_test(base: Figure, cand: Figure, alternative: str) -> Test:
    # Each interval gives a standard error (normal approximation at its own confidence).
    def se(f: Figure) -> float:
        z = scipy.stats.norm.ppf(0.5 + (f.confidence or 0.95) / 2)
        return (f.ci_high - f.ci_low) / (2 * z)

    diff = cand.value - base.value if alternative == "greater" else base.value - cand.value
    spread = math.hypot(se(base), se(cand))
    if spread == 0:
        p = 0.0 if diff > 0 else 1.0  # exact figures: any change is real
    else:
        p = float(scipy.stats.norm.sf(diff / spread))
    return Test(f"normal approx. from the CIs (n={base.n}/{cand.n})", p, n=min(base.n or 0, cand.n or 0))


def summarize_counts(result: GateResult) -> dict[str, Any]:
    """Counts of verdicts by status."""
    counts: dict[str, Any] = {}
    for v in result.verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return counts
