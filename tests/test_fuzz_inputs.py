"""Seeded fuzzing of the readers of user files: every mutated sweep, policy, baseline or
pytest-benchmark file is accepted or refused with one line, never a traceback or a hang
(issue 17). The longer campaign is benchmarks/fuzz_inputs.py."""

from __future__ import annotations

import pytest

from harness.testing.fuzz import FuzzResult, fuzz_gate_files, fuzz_policies, fuzz_sweeps, run_case

SEED = 17


def _check(result: FuzzResult, n: int) -> None:
    assert result.cases == n
    assert result.tracebacks == [], "\n\n".join(result.tracebacks[:3])
    assert result.hangs == []
    # Both outcomes occur, so the mutations neither all break the file nor all miss it.
    assert result.errors > n // 4 and result.accepted > 0
    assert result.errors + result.accepted == n


@pytest.mark.parametrize("campaign, n", [(fuzz_sweeps, 200), (fuzz_policies, 100), (fuzz_gate_files, 200)])
def test_mutated_inputs_are_accepted_or_refused_in_one_line(tmp_path, campaign, n):
    _check(campaign(n, SEED, tmp_path), n)


def test_the_campaigns_are_reproducible(tmp_path):
    assert fuzz_policies(40, 3, tmp_path).row() | {"slowest case (s)": 0} == \
        fuzz_policies(40, 3, tmp_path).row() | {"slowest case (s)": 0}


def test_the_runner_tells_tracebacks_hangs_and_multi_line_messages_apart():
    import time

    result = FuzzResult()
    run_case("ok", lambda: None, result, 1.0)
    run_case("clean", lambda: (_ for _ in ()).throw(ValueError("one line")), result, 1.0)
    run_case("two lines", lambda: (_ for _ in ()).throw(ValueError("a\nb")), result, 1.0)
    run_case("bug", lambda: {}["missing"], result, 1.0)
    run_case("hang", lambda: time.sleep(5), result, 0.2)
    assert (result.cases, result.accepted, result.errors) == (5, 1, 1)
    assert [t.split(":")[0] for t in result.tracebacks] == ["two lines", "bug"] and "KeyError" in result.tracebacks[1]
    assert result.hangs == ["hang"]


def test_an_outer_alarm_survives_the_runner():
    import signal

    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(True))
    try:
        signal.setitimer(signal.ITIMER_REAL, 100.0)
        run_case("ok", lambda: None, FuzzResult(), 1.0)
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90 < remaining <= 100 and not fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
