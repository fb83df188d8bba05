"""How often does the gate cry wolf? Repeat an identical tiny run N times and gate each against
the first run and against a baseline of the first K runs; then inject two real regressions (a
slower call, degraded audio) and gate those.

    OMP_NUM_THREADS=1 python benchmarks/gate_false_alarms.py --repeats 20 --baseline-runs 5 --out /tmp/gate-study
    OMP_NUM_THREADS=1 python benchmarks/gate_false_alarms.py --ab-repeats 20 --repeats 0 --out /tmp/ab-study

``--ab-repeats N`` also runs N interleaved A/A sessions (``gate-ab`` of the sweep against
itself), counts the latency gates that fail and those left inconclusive, and then gates a slower
configuration (twice the steps) in one more session. ``--ab-injected`` gates a moderately slower
configuration (14 steps instead of 10, about +35 % per call) in a 6-round session, then in a
sequential session (6 rounds a look, up to ``--max-rounds``).

Verdicts are counted three ways: fails (regression, missing), inconclusive (not enough evidence
either way) and not comparable; only fails are false alarms.

Each repetition runs the sweep (generate), benches it (per-call latency and memory) and scores
it with the mel embedder against the first run's audio (the accepted outputs: the usual
reference of a model-quality regression test), as a CI job would. The policy is
benchmarks/gates/quality.toml plus benchmarks/gates/ci-latency.toml.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import harness.generate.local as local
import harness.measure.stages as measure
from harness.measure.bench import bench_sweep
from harness.measure.ab import ABSession, ab_session
from harness.gate.compare import compare
from harness.gate.sequential import sequential_compare
from harness.gate.policy import Policy, load_policy
from harness.gate.summary import from_runs
from harness.generate.run import run_sweep
from harness.score.scoring import score_run

HERE = Path(__file__).resolve().parent
SWEEP = HERE / "sweeps" / "gate-study.toml"


def one_run(sweep: Path, run_dir: Path, reference: Path | None, cache: Path) -> Path:
    """Generate, bench and score one run folder (the first run is its own reference)."""
    run_sweep(sweep, run_dir, progress=False)
    bench_sweep(sweep, run_dir, progress=False)
    reference = reference or next((run_dir / "audio").iterdir())
    score_run(run_dir, str(reference), ["mel"], bootstrap=200, cache_dir=cache)
    return run_dir


@contextmanager
def injected(module, name: str, wrap):
    """Replace ``module.name`` by ``wrap(original)`` for the duration."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, name, wrap(getattr(module, name)))
        yield


def slower(seconds: float):
    """A wrapper factory adding ``seconds`` to every call."""
    def wrap(original):
        def call(*args, **kwargs):
            time.sleep(seconds)
            return original(*args, **kwargs)
        return call
    return wrap


def noisy(original):
    """Wrap ``generate`` so every output gets Gaussian noise (std 0.1): degraded audio."""
    def call(*args, **kwargs):
        audio = original(*args, **kwargs)
        return audio + np.random.default_rng(0).normal(0, 0.1, audio.shape).astype(audio.dtype)
    return call


def main() -> None:
    """Run the study and print (and write) its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ab-repeats", type=int, default=0)
    parser.add_argument("--baseline-runs", type=int, default=5, help="runs in the multi-run baseline")
    parser.add_argument("--slowdown-s", type=float, default=0.25,
                        help="seconds the injected regression adds to each call (about +50 %% here)")
    parser.add_argument("--ab-injected", action="store_true", help="the +35 %% case: 6 rounds, then sequential")
    parser.add_argument("--max-rounds", type=int, default=60, help="round budget of the sequential session")
    parser.add_argument("--out", type=Path, default=Path("gate-study"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.ab_repeats:
        ab_study(SWEEP, args.ab_repeats)
    if args.ab_injected:
        ab_injected(SWEEP, args.max_rounds)
    if args.repeats:
        run_study(SWEEP, args)


def ab_study(sweep: Path, repeats: int) -> None:
    """A/A interleaved sessions: every failure is a false alarm."""
    policy = load_policy(HERE / "gates" / "ci-latency.toml")
    alarms, undecided = 0, 0
    for i in range(1, repeats + 1):
        base, cand = ab_session(sweep, sweep, rounds=10, progress=False)
        result = compare(base, cand, policy)
        ratio = [v.candidate / v.baseline for v in result.verdicts if v.figure == "latency_ms:total:p50"][0]
        alarms += result.exit_code == 1
        undecided += any(v.status == "inconclusive" for v in result.verdicts)
        print(f"A/A session {i:2d}: exit {result.exit_code}, median total B/A {ratio:.3f}, "
              f"{[(v.figure, v.status, _ci(v.interval)) for v in result.verdicts]}")
    slower_sweep = Path(tempfile.mkdtemp()) / "slower.toml"  # the same cell at twice the steps
    slower_sweep.write_text(sweep.read_text().replace("steps = [10]", "steps = [20]"))
    base, cand = ab_session(sweep, slower_sweep, rounds=10, progress=False)
    result = compare(base, cand, policy)
    print(f"A/B 10 vs 20 steps: exit {result.exit_code}; "
          f"{[(v.figure, v.status, round(v.change, 3), v.p_value) for v in result.verdicts]}")
    print(json.dumps({"ab_sessions": repeats, "sessions_with_a_false_alarm": alarms,
                      "sessions_with_an_inconclusive_figure": undecided}))


def _ci(interval) -> str:
    return "-" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def ab_injected(sweep: Path, max_rounds: int) -> None:
    """About +35 % (14 vs 10 steps): a 6-round session, then a sequential one up to ``max_rounds``."""
    policy = load_policy(HERE / "gates" / "ci-latency.toml")
    slower_sweep = Path(tempfile.mkdtemp()) / "slower.toml"
    slower_sweep.write_text(sweep.read_text().replace("steps = [10]", "steps = [14]"))
    base, cand = ab_session(sweep, slower_sweep, rounds=6, progress=False)
    for label, result in [("6 rounds", compare(base, cand, policy)),
                          (f"sequential, 6 a look, up to {max_rounds}",
                           sequential_compare(ABSession(sweep, slower_sweep, progress=False).add_rounds, policy,
                                              6, max_rounds))]:
        print(f"A/B 10 vs 14 steps, {label}: exit {result.exit_code}; {result.notes}")
        for v in result.verdicts:
            print(f"  {v.figure}: {v.status}, change {v.change:+.3f}, CI {_ci(v.interval)}, "
                  f"p {v.p_value:.3g} / {v.p_within:.3g}; {v.test}; {v.needed}")


def run_study(sweep: Path, args: argparse.Namespace) -> None:
    """Identical runs gated against the first run and against the first K runs, then injections."""
    cache = args.out / "cache"
    policy = Policy(rule=[*load_policy(HERE / "gates" / "quality.toml").rule,
                          *load_policy(HERE / "gates" / "ci-latency.toml").rule])
    first = one_run(sweep, args.out / "run-00", None, cache)
    reference = next((first / "audio").iterdir())
    base_runs = [first] + [one_run(sweep, args.out / f"base-{i:02d}", reference, cache)
                           for i in range(1, args.baseline_runs)]
    baselines = {"1 run": from_runs([first]), f"{len(base_runs)} runs": from_runs(base_runs)}
    alarms = {name: Counter() for name in baselines}
    inconclusive = {name: Counter() for name in baselines}
    runs_alarmed, runs_unsure = Counter(), Counter()
    for i in range(1, args.repeats + 1):
        candidate = from_runs([one_run(sweep, args.out / f"run-{i:02d}", reference, cache)])
        for name, baseline in baselines.items():
            result = compare(baseline, candidate, policy)
            failing = [v.figure for v in result.verdicts if v.status in ("regression", "missing")]
            unsure = [v.figure for v in result.verdicts if v.status in ("inconclusive", "incomparable")]
            alarms[name].update(failing)
            inconclusive[name].update(unsure)
            runs_alarmed[name] += bool(failing)
            runs_unsure[name] += bool(unsure)
            print(f"identical run {i:2d} vs baseline of {name}: exit {result.exit_code}, failing: {failing}, "
                  f"inconclusive or not comparable: {unsure}")
    injected_results = {}
    for name, (module, attr, wrap) in {"slower call": (measure, "generate", slower(args.slowdown_s)),
                                       "noisy audio": (local, "generate", noisy)}.items():
        with injected(module, attr, wrap):
            run = one_run(sweep, args.out / name.replace(" ", "-"), reference, cache)
        for base_name, baseline in baselines.items():
            result = compare(baseline, from_runs([run]), policy)
            injected_results[f"{name} vs {base_name}"] = {v.figure: [v.status, v.change, v.p_value]
                                                           for v in result.verdicts}
            print(f"{name} vs baseline of {base_name}: exit {result.exit_code}; regressions: "
                  f"{[(v.figure, round(v.change, 3)) for v in result.verdicts if v.status == 'regression']}")
    summary = {"identical_runs": args.repeats, "runs_with_a_false_alarm": dict(runs_alarmed),
               "false_alarms_by_figure": {k: dict(v) for k, v in alarms.items()},
               "runs_with_an_inconclusive_figure": dict(runs_unsure),
               "inconclusive_by_figure": {k: dict(v) for k, v in inconclusive.items()},
               "injected": injected_results}
    (args.out / "study.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "injected"}))


if __name__ == "__main__":
    main()
