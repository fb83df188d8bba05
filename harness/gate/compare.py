"""Verdicts: a candidate summary against a baseline summary under a policy.

A figure fails only when its regression is larger than the rule allows AND (unless the rule
says ``significance = false``) a one-sided test at ``alpha = 1 - confidence`` says that the
candidate is worse than the baseline *moved by the allowance* (e.g. 10 % slower): the null
hypothesis is "the regression is at most what the policy allows", so noise alone, and even a
real change within the allowance, fails a figure in at most alpha of cases (per figure; the
policy's ``correction = "bonferroni"`` divides alpha by the number of gated figures). The test is
the strongest the data allow:

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
from harness.score.metrics.bootstrap import paired_bootstrap

Status = Literal["pass", "improved", "regression", "missing", "incomparable"]
FAILING: tuple[Status, ...] = ("regression", "missing")


@dataclass(frozen=True)
class Test:
    """A significance test's name, its one-sided p-value (None: no test possible), and the
    smallest p-value it could give with this many observations."""

    name: str
    p: float | None
    floor: float = 0.0


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
    p_value: float | None = None
    unit: str = ""


@dataclass
class GateResult:
    """All verdicts, plus what was compared and what was not gated."""

    verdicts: list[Verdict]
    environment_differences: list[str] = field(default_factory=list)
    ungated: int = 0
    new_cells: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 regression (or a baseline cell missing), else 2 if a figure cannot be compared, else 0.

        A regression wins over a data error: CI set-ups that read 2 as "infrastructure problem"
        must not wave a real regression through because another figure was incomparable.
        """
        if any(v.status in FAILING for v in self.verdicts):
            return 1
        return 2 if any(v.status == "incomparable" for v in self.verdicts) else 0


def environment_differences(baseline: Summary, candidate: Summary) -> list[str]:
    """'key: baseline != candidate' for every environment key that differs."""
    return env_differences(baseline.environment_key(), candidate.environment_key())


def compare(baseline: Summary, candidate: Summary, policy: Policy, allow_env_mismatch: bool = False) -> GateResult:
    """Judge every gated figure of every baseline cell."""
    diffs = environment_differences(baseline, candidate)
    if diffs and not allow_env_mismatch:
        raise GateError(f"baseline and candidate were measured in different environments ({'; '.join(diffs)}); "
                        "save a baseline in this environment, or pass --allow-env-mismatch to compare anyway")
    result = GateResult([], diffs, new_cells=sorted(set(candidate.cells) - set(baseline.cells)))
    gated = [(key, cell, name, fig, policy.rule_for(name)) for key, cell in baseline.cells.items()
             for name, fig in sorted(cell.figures.items())]
    result.ungated = sum(rule is None for *_, rule in gated)
    gated = [g for g in gated if g[-1] is not None]
    # Bonferroni: the chance that ANY figure fails on noise stays at alpha, at the cost of power.
    alpha = policy.alpha / max(len(gated), 1) if policy.correction == "bonferroni" else policy.alpha
    for key, base_cell, name, base_fig, rule in gated:
        cand_cell = candidate.cells.get(key)
        if cand_cell is None or name not in cand_cell.figures:
            where = "cell" if cand_cell is None else "figure"
            result.verdicts.append(Verdict(key, base_cell.label, name, "missing", base_fig.value,
                                           allowed=rule.describe(), test=f"{where} not in candidate"))
        else:
            result.verdicts.append(judge(key, base_cell.label, name, base_fig, cand_cell.figures[name], rule, alpha))
    if not result.verdicts:  # a gate that judged nothing must not pass
        names = sorted({n for c in baseline.cells.values() for n in c.figures})
        raise GateError(f"no figure was gated: no rule of the policy matches any of the baseline's {len(names)} "
                        f"figure name(s) ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}); "
                        "fix the rules' figure patterns")
    return result


def judge(cell: str, label: str, name: str, base: Figure, cand: Figure, rule: Rule, alpha: float) -> Verdict:
    """Verdict on one figure: regression beyond the allowance and significant, or not."""
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
    test = significance(allowance(base, rule, better), cand, better)
    verdict.test, verdict.p_value = test.name, test.p
    significant = test.p is None or test.p < alpha
    if verdict.change > limit and rule.significance and not significant and test.floor >= alpha:
        verdict.status = "incomparable"  # a pass here would only mean "too few observations"
        verdict.test += (f"; too few observations: this test cannot go below p = {test.floor:.3g} >= alpha "
                         f"{alpha:g}; time more calls (bench --repeats) or rounds (gate-ab --rounds)")
    elif verdict.change > limit and (significant or not rule.significance):
        verdict.status = "regression"
    elif verdict.change < 0 and _better_beyond_doubt(base, cand, better, alpha):
        verdict.status = "improved"
    else:
        verdict.status = "pass"
    return verdict


def allowance(base: Figure, rule: Rule, better: str) -> Figure:
    """The baseline moved by the allowed regression: the boundary the candidate is tested against."""
    worse_sign = 1.0 if better == "lower" else -1.0
    factor, delta = 1.0, 0.0
    if rule.relative is not None and base.scale == "ratio":  # latency-like: a multiplicative allowance
        factor = 1.0 + worse_sign * rule.relative
    elif rule.relative is not None:
        delta = worse_sign * rule.relative * abs(base.value)
    else:
        delta = worse_sign * rule.absolute

    def move(x: float | None) -> float | None:
        return None if x is None else x * factor + delta

    return replace(base, value=move(base.value), ci_low=move(base.ci_low), ci_high=move(base.ci_high),
                   std=None if base.std is None else base.std * factor,
                   samples=None if base.samples is None else [move(x) for x in base.samples],
                   run_values=None if base.run_values is None else [move(x) for x in base.run_values])


def _better_beyond_doubt(base: Figure, cand: Figure, better: str, alpha: float) -> bool:
    p_worse = significance(base, cand, better).p
    return p_worse is not None and p_worse > 1 - alpha


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
            return Test(name + ", all equal", 1.0, floor)
        return Test(name, float(scipy.stats.mannwhitneyu(c, b, alternative=alternative).pvalue), floor)
    if _has_ci(base) and _has_ci(cand):
        return _ci_test(base, cand, alternative)
    if base.std is not None and cand.std is not None and (base.n or 0) > 1 and (cand.n or 0) > 1:
        if base.std == 0 and cand.std == 0:  # exact values: any difference is real
            worse = cand.value > base.value if alternative == "greater" else cand.value < base.value
            return Test(f"Welch t (n={base.n}/{cand.n}, no spread on either side)", 0.0 if worse else 1.0)
        p = scipy.stats.ttest_ind_from_stats(cand.value, cand.std, cand.n, base.value, base.std, base.n,
                                             equal_var=False, alternative=alternative).pvalue
        return Test(f"Welch t (n={base.n}/{cand.n})", float(p) if np.isfinite(p) else 1.0)
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
            return Test(name + ", all equal", 1.0, floor)
        return Test(name, float(scipy.stats.wilcoxon(d, alternative=alternative).pvalue), floor)
    res = paired_bootstrap(c, b, n_resamples=2999, method="percentile")
    # The two-sided bootstrap p halves to a one-sided one when the shift points the tested way.
    bad = res.mean_diff > 0 if alternative == "greater" else res.mean_diff < 0
    p = res.p_value / 2 if bad else 1 - res.p_value / 2
    return Test(f"paired bootstrap (n={res.n})", float(min(1.0, p)))


def _prediction_test(runs: np.ndarray, value: float, scale: str, alternative: str) -> Test:
    # Is the candidate beyond what one more baseline run would plausibly give? t with k-1 df.
    if scale == "ratio" and np.all(runs > 0) and value > 0:
        runs, value = np.log(runs), math.log(value)
    k = runs.size
    t = (value - runs.mean()) / (runs.std(ddof=1) * math.sqrt(1 + 1 / k))
    p = scipy.stats.t.sf(t, k - 1) if alternative == "greater" else scipy.stats.t.cdf(t, k - 1)
    return Test(f"prediction t vs {k} baseline runs", float(p))


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
    return Test(f"normal approx. from the CIs (n={base.n}/{cand.n})", p)


def summarize_counts(result: GateResult) -> dict[str, Any]:
    """Counts of verdicts by status."""
    counts: dict[str, Any] = {}
    for v in result.verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return counts
