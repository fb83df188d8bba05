"""A small run of benchmarks/history_simulation.py: the detector finds known steps and keeps quiet on noise.

Quiet-runner noise (3 % per call, 2 % between runs, 8 calls per run); 40 series of 100 commits per case.
The full table, with the noise measured on this machine, is in RESULTS.md.
"""

from __future__ import annotations

import pytest
from history_simulation import Noise, study

QUIET = Noise(within_cv=0.03, between_cv=0.02, calls=8)


@pytest.mark.parametrize("step, least", [(0.05, 0.85), (0.10, 0.95), (0.20, 0.95)])
def test_known_steps_are_found_at_their_commit(step, least):
    result = study(QUIET, step, drift=0.0, series=40, seed=1)
    assert result["detected"] >= least
    assert result["false_per_100"] <= 0.25


def test_pure_noise_gives_almost_no_steps():
    assert study(QUIET, 0.0, drift=0.0, series=40, seed=2)["false_per_100"] <= 0.25  # <= 10 in 4,000 commits


def test_noise_as_loud_as_the_step_hides_it():
    # Between-run noise of 14 % (this shared machine) hides a +5 % step: detection must drop, not fake hits.
    loud = study(Noise(0.066, 0.14, 8), 0.05, drift=0.0, series=40, seed=3)
    assert loud["detected"] <= 0.2 and loud["false_per_100"] <= 0.25
