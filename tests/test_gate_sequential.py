"""Sequential A/B gating: the alpha-spending schedule against its closed forms, and the error rates
of whole simulated sessions (paired lognormal rounds) against alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from harness.gate.policy import Policy, Rule
from harness.gate.sequential import SequentialError, levels, looks, sequential_compare, spent
from harness.gate.summary import CellSummary, Figure, Summary

ENV = {"cpu": "x86_64"}
POLICY = Policy(rule=[Rule(figure="latency_ms:*", max_regression="10%")])


def test_spending_functions_match_their_closed_forms():
    assert spent(1.0, 0.05, "pocock") == pytest.approx(0.05)
    assert spent(0.5, 0.05, "pocock") == pytest.approx(0.05 * math.log(1 + (math.e - 1) / 2))
    z = scipy.stats.norm.ppf(1 - 0.025)
    assert spent(0.25, 0.05, "obrien-fleming") == pytest.approx(2 * scipy.stats.norm.sf(z / 0.5))
    assert spent(1.0, 0.05, "obrien-fleming") == pytest.approx(0.05)
    schedule = looks(10, 40)
    assert schedule == [10, 20, 30, 40] and looks(10, 25, 10) == [10, 20, 25] and looks(6, 6) == [6]
    per_look = levels(schedule, 0.05)
    assert sum(per_look) == pytest.approx(0.05) and all(x > 0 for x in per_look)
    assert levels([6], 0.05) == [pytest.approx(0.05)]  # one look: the fixed-n test
    with pytest.raises(SequentialError, match="--max-rounds"):
        looks(10, 5)


def _session(ratio: float, spread: float, rng: np.random.Generator):
    """A fake A/B session: each round, A ~ lognormal(100 ms) and B = A * ratio * noise."""
    a, b = [], []

    def more(k: int) -> tuple[Summary, Summary]:
        base = 100 * rng.lognormal(0, spread, k)
        a.extend(base)
        b.extend(base * ratio * rng.lognormal(0, spread, k))
        keys = [f"round-{i}" for i in range(len(a))]
        out = []
        for side in (a, b):
            fig = Figure(float(np.median(side)), "lower", "ms", "ratio", len(side), samples=list(side), keys=keys)
            out.append(Summary("sim", ENV, {"pair-0": CellSummary("sim", {"latency_ms:total:p50": fig})}))
        return out[0], out[1]

    return more


def _verdicts(ratio: float, sessions: int, seed: int, rounds=10, max_rounds=30, spread=0.15):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sessions):
        result = sequential_compare(_session(ratio, spread, rng), POLICY, rounds, max_rounds, intervals=False)
        out.append(result.verdicts[0].status)
    return out


def test_simulated_sessions_keep_the_false_fail_rate_at_alpha():
    """200 sessions at the allowance itself (+10 %, the worst case for a false fail) and 200 A/A ones:
    with looks at 10, 20 and 30 rounds the session fails at most alpha of them (+ binomial slack)."""
    slack = 2 * math.sqrt(0.05 * 0.95 / 200)
    boundary = _verdicts(1.10, 200, seed=1)
    assert boundary.count("regression") / 200 <= 0.05 + slack
    same = _verdicts(1.0, 200, seed=2)
    assert same.count("regression") == 0
    assert same.count("pass") / 200 >= 0.8  # and most unchanged configurations are shown within the allowance


def test_a_clear_regression_left_inconclusive_by_six_rounds_is_decided_by_more():
    rng = np.random.default_rng(4)
    fixed = [sequential_compare(_session(1.35, 0.3, rng), POLICY, 6, 6, intervals=False).verdicts[0].status
             for _ in range(50)]
    assert fixed.count("inconclusive") >= 25  # n = 6 with a 30 % spread: mostly not enough evidence
    more = _verdicts(1.35, 50, seed=5, rounds=6, max_rounds=60, spread=0.3)
    assert more.count("regression") >= 45 and more.count("pass") == 0
