"""The gate policy: per figure, the regression allowed and whether it must be significant.

A policy file (TOML)::

    confidence = 0.95             # one-sided tests at alpha = 1 - confidence
    correction = "none"           # or "bonferroni": alpha / (number of gated figures)
    inconclusive = "warn"         # or "fail": exit 3 when a figure is neither shown within
                                  # the allowance nor shown beyond it (default: warn, exit 0)

    [[rule]]
    figure = "latency_ms:*:p50"   # fnmatch pattern over figure names; the first match wins
    max_regression = "10%"        # relative ("10%") or absolute (a number, in the figure's unit)

    [[rule]]
    figure = "clap_score:*"
    max_regression = 0.02
    significance = true           # default: fail only on a regression the data show is real

Figures no rule matches are reported but never fail the gate.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import HarnessError
from harness.spec import read_toml
from harness.validation import first_error, one_line, tree_problem

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class PolicyError(HarnessError, ValueError):
    """A policy file that cannot be used; the message names the key and the fix."""


# Strict: `significance = "yes"` or `max_regression = true` are mistakes, not values to coerce;
# a NaN allowance would compare false against every change and pass everything.
_POLICY = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Rule(BaseModel):
    """How much one family of figures may regress before the gate fails."""

    model_config = _POLICY

    figure: str = Field(min_length=1)
    max_regression: str | float
    significance: bool = True
    better: Literal["lower", "higher"] | None = None  # None: from the figure's own direction

    @field_validator("max_regression")
    @classmethod
    def _amount(cls, value: str | float) -> str | float:
        if isinstance(value, str) and not _PERCENT.match(value):
            raise ValueError(f"must be a percentage like \"10%\" or a number; got {value!r}")
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"must be >= 0; got {value}")
        return value

    @property
    def relative(self) -> float | None:
        """The allowed relative regression (0.1 for "10%"), or None when absolute."""
        match = _PERCENT.match(self.max_regression) if isinstance(self.max_regression, str) else None
        return float(match.group(1)) / 100 if match else None

    @property
    def absolute(self) -> float | None:
        """The allowed absolute regression, or None when relative."""
        return None if self.relative is not None else float(self.max_regression)

    def describe(self) -> str:
        """'10%' or '0.02' (absolute)."""
        return f"{self.relative * 100:g}%" if self.relative is not None else f"{self.absolute:g}"


class Policy(BaseModel):
    """Confidence level and the ordered rules."""

    model_config = _POLICY

    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    correction: Literal["none", "bonferroni"] = "none"  # for the number of gated figures
    # Not enough evidence either way: "warn" says so and exits 0, "fail" exits 3.
    inconclusive: Literal["fail", "warn"] = "warn"
    rule: list[Rule] = Field(default_factory=list)

    def rule_for(self, figure: str) -> Rule | None:
        """The first rule whose pattern matches ``figure``."""
        return next((r for r in self.rule if fnmatch.fnmatchcase(figure, r.figure)), None)

    @property
    def alpha(self) -> float:
        """One-sided significance level."""
        return 1.0 - self.confidence


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy TOML file; any problem is a one-line PolicyError."""
    data = read_toml(path, "policy", PolicyError)
    problem = tree_problem(data)
    if problem:
        raise PolicyError(f"{path}: {problem}")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as err:
        msg = first_error(err)
        if err.errors()[0]["type"] == "extra_forbidden":
            msg += "; allowed: confidence, correction, inconclusive, rule (with figure, max_regression, significance, better)"
        raise PolicyError(one_line(f"{path}: {msg}")) from None
    if not policy.rule:
        raise PolicyError(f"{path}: no [[rule]] tables; add at least one (see benchmarks/gates/)")
    return policy
