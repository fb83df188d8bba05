"""The gate: a candidate's figures against a baseline's, under a policy, as pass, fail or inconclusive for CI.

policy.py (what may regress, by how much), summary.py (figures with their uncertainty, from
run folders, baselines or pytest-benchmark JSON), compare.py (verdicts and significance tests),
sequential.py (gate-ab's looks with alpha spending), output.py (Markdown and JUnit XML).
"""

from __future__ import annotations

from pathlib import Path

from harness.gate.compare import GateResult, compare
from harness.gate.policy import load_policy
from harness.gate.summary import load


def gate(candidate: str | Path, baseline: str | Path, policy: str | Path,
         allow_env_mismatch: bool = False) -> GateResult:
    """Compare a candidate (run folder, baseline or benchmark JSON) with a baseline under a policy file."""
    rules = load_policy(policy)
    return compare(load(baseline), load(candidate), rules, allow_env_mismatch)
