"""Sequential A/B gating: add rounds until every gated figure is decided or a round budget is spent.

Method: a group-sequential design with Lan-DeMets alpha spending. The session looks at the data
after ``n_1 < n_2 < ... <= N`` rounds (N = the budget, ``--max-rounds``); at look k each of the two
one-sided tests of a figure (beyond the allowance: fail; within it: pass) is run at the level
``alpha(t_k) - alpha(t_{k-1})``, where ``t = n / N`` is the information fraction and
``alpha(t)`` a spending function with ``alpha(1) = alpha``:

* ``pocock`` (default): ``alpha * ln(1 + (e - 1) t)``, spending evenly, so clear cases stop early;
* ``obrien-fleming``: ``2 - 2 Phi(z_{alpha/2} / sqrt(t))``, spending almost nothing early and
  keeping the last look close to a fixed-n test.

Each look's levels sum to at most alpha over the whole session, so by the union bound the chance
that an unchanged (or within-allowance) configuration ever fails is at most alpha, and likewise
the chance that one beyond the allowance ever passes; this holds whatever the correlation of
the tests across looks (it is conservative: exact group-sequential boundaries would spend a
little less). A figure keeps the verdict of the look that decided it; what is still undecided
when the budget is spent is inconclusive. With one look (``max_rounds == rounds``) this is the
fixed-n gate at alpha.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import scipy.stats

from harness.errors import HarnessError
from harness.gate.compare import GateResult, Verdict, compare
from harness.gate.policy import Policy
from harness.gate.summary import Summary

Spending = Literal["pocock", "obrien-fleming"]
SPENDING: tuple[str, ...] = ("pocock", "obrien-fleming")


class SequentialError(HarnessError, ValueError):
    """A round schedule that cannot work; the message names the option and the fix."""


def spent(t: float, alpha: float, kind: Spending = "pocock") -> float:
    """Alpha spent by information fraction ``t`` (0 at t = 0, alpha at t = 1)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if kind == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    if kind == "obrien-fleming":
        return float(2 - 2 * scipy.stats.norm.cdf(scipy.stats.norm.isf(alpha / 2) / math.sqrt(t)))
    raise SequentialError(f"unknown spending function {kind!r}; use one of {', '.join(SPENDING)}")


def looks(rounds: int, max_rounds: int, every: int | None = None) -> list[int]:
    """Round counts at which the data are tested: ``rounds``, then every ``every`` more, up to the budget."""
    every = every or rounds
    if rounds < 2:
        raise SequentialError(f"--rounds must be >= 2 for a paired test; got {rounds}")
    if max_rounds < rounds:
        raise SequentialError(f"--max-rounds ({max_rounds}) must be >= --rounds ({rounds})")
    if every < 1:
        raise SequentialError(f"--look-every must be >= 1; got {every}")
    out = list(range(rounds, max_rounds + 1, every))
    return out if out[-1] == max_rounds else [*out, max_rounds]


def levels(schedule: list[int], alpha: float, kind: Spending = "pocock") -> list[float]:
    """The per-look test level: the alpha spent between the previous look and this one."""
    total = schedule[-1]
    spent_at = [spent(n / total, alpha, kind) for n in schedule]
    return [b - a for a, b in zip([0.0, *spent_at], spent_at)]


def sequential_compare(more: Callable[[int], tuple[Summary, Summary]], policy: Policy, rounds: int,
                       max_rounds: int, every: int | None = None, kind: Spending = "pocock",
                       allow_env_mismatch: bool = False, intervals: bool = True) -> GateResult:
    """Run ``more(k)`` (k more rounds; returns the cumulative summaries) look by look until decided."""
    schedule = looks(rounds, max_rounds, every)
    decided: dict[tuple[str, str], Verdict] = {}
    done, result = 0, None
    for look, (n, level) in enumerate(zip(schedule, levels(schedule, policy.alpha, kind)), 1):
        base, cand = more(n - done)
        done = n
        result = compare(base, cand, policy, allow_env_mismatch, alpha=level, intervals=intervals)
        for v in result.verdicts:
            key = (v.cell, v.figure)
            if key not in decided and v.status != "inconclusive":
                if len(schedule) > 1:
                    v.test += f"; decided at look {look} of {len(schedule)} ({n} rounds, level {level:.3g})"
                decided[key] = v
        if all((v.cell, v.figure) in decided for v in result.verdicts):
            break
    assert result is not None
    result.verdicts = [decided.get((v.cell, v.figure), v) for v in result.verdicts]
    if len(schedule) > 1:
        result.notes.append(f"sequential A/B: {done} of at most {max_rounds} rounds; looks at {schedule} rounds, "
                            f"{kind} alpha spending (one-sided alpha {policy.alpha:g} per direction over the session)")
    return result
