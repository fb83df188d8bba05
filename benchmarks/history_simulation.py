"""How well does `history report` find steps? Synthetic latency series with known steps.

    OMP_NUM_THREADS=1 python benchmarks/history_simulation.py --noise-from /tmp/hist/runs/r0[1-7]
    OMP_NUM_THREADS=1 python benchmarks/history_simulation.py --between-cv 0.02 --within-cv 0.03

Each series is 100 commits of one figure (a latency p50). Every commit is one run: ``--calls``
per-call timings with lognormal within-run noise (``within_cv``), the run's own lognormal
offset (``between_cv``: machine state, neighbours), optionally a linear drift (+10 % over the
100 commits), and optionally a step of +5 %, +10 % or +20 % at a known commit (drawn between
commit 25 and 75). The point is the median of the calls with its standard error, exactly as
the history stores it, and the detector is the one `history report` runs.

A step counts as detected when a detected step lies within +/- 2 commits of the true one with
the right sign; every other detected step is a false step. ``--noise-from RUN...`` measures the
two noise levels from run folders of one unchanged cell (``bench`` per-call totals): within-run
as the median over runs of the SD of log call times, between-run as the SD of the runs' log
medians less their own standard errors (the same successive-difference estimator the detector
uses).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.history.changepoints import (
    DEFAULT_PENALTY,
    between_run_variance,
    detect,
    point_se,
)

STEPS = (0.0, 0.05, 0.10, 0.20)


@dataclass(frozen=True)
class Noise:
    """Lognormal noise of a latency: within one run (per call) and between runs (per run)."""

    within_cv: float
    between_cv: float
    calls: int = 8


def simulate_series(rng: np.random.Generator, noise: Noise, n: int, step: float, at: int,
                    drift: float) -> tuple[np.ndarray, np.ndarray]:
    """Point values (medians of the calls) and their standard errors."""
    level = 100.0 * (1 + drift * np.arange(n) / n) * np.where(np.arange(n) >= at, 1 + step, 1.0)
    run = level * np.exp(rng.normal(0, noise.between_cv, n))
    calls = run[:, None] * np.exp(rng.normal(0, noise.within_cv, (n, noise.calls)))
    values = np.median(calls, axis=1)
    se = np.array([point_se(v, samples=c) for v, c in zip(values, calls)])
    return values, se


def study(noise: Noise, step: float, drift: float, series: int, n: int = 100, penalty: float = DEFAULT_PENALTY,
          seed: int = 0) -> dict[str, float]:
    """Detection rate of the true step and false steps per 100 commits over ``series`` series."""
    rng = np.random.default_rng(seed)
    found, false = 0, 0
    for _ in range(series):
        at = int(rng.integers(25, 76))
        values, se = simulate_series(rng, noise, n, step, at, drift)
        steps, _ = detect(values, se, relative=True, penalty=penalty)
        hit = [s for s in steps if step and abs(s.index - at) <= 2 and np.sign(s.size) == np.sign(step)]
        found += bool(hit)
        false += len(steps) - min(len(hit), 1)
    return {"detected": found / series if step else math.nan, "false_per_100": 100 * false / (series * n)}


def measure_noise(run_dirs: Sequence[str | Path]) -> Noise:
    """Within- and between-run noise of the total latency of the one cell of these run folders."""
    from harness.results import cell_latency, load_run

    logs = []
    for d in run_dirs:
        run = load_run(d)
        (cell,) = run.cells
        lat = cell_latency(run, cell["id"])
        logs.append(np.log(lat.seconds))
    within = float(np.median([np.std(x, ddof=1) for x in logs]))
    medians = np.array([np.median(x) for x in logs])
    se = np.array([point_se(m, samples=x) for m, x in zip(medians, logs)])
    between = math.sqrt(between_run_variance(medians, se))
    return Noise(within, between, calls=int(np.median([len(x) for x in logs])))


def table(noise: Noise, series: int, penalties: Sequence[float]) -> str:
    """Markdown table: rows step size x drift, columns detection and false steps per penalty."""
    head = " | ".join(f"detected (pen {p:g}) | false / 100 commits (pen {p:g})" for p in penalties)
    lines = [f"| step | drift | {head} |", "|---|---|" + "---:|" * (2 * len(penalties))]
    for drift in (0.0, 0.10):
        for step in STEPS:
            cells = []
            for p in penalties:
                r = study(noise, step, drift, series, penalty=p)
                cells += ["–" if math.isnan(r["detected"]) else f"{r['detected']:.0%}", f"{r['false_per_100']:.2f}"]
            lines.append(f"| {'none' if not step else f'+{step:.0%}'} | {'+10 % linear' if drift else 'none'} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    """Print the noise used and the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise-from", nargs="+", metavar="RUN", help="run folders of one unchanged cell")
    parser.add_argument("--within-cv", type=float, default=0.03)
    parser.add_argument("--between-cv", type=float, default=0.02)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--series", type=int, default=200, help="series per table cell")
    parser.add_argument("--penalty", type=float, action="append", help="penalty factor(s) (default: 2, 3, 4)")
    args = parser.parse_args()
    noise = measure_noise(args.noise_from) if args.noise_from else Noise(args.within_cv, args.between_cv, args.calls)
    print(f"noise: {json.dumps(noise.__dict__)} ({'measured from ' + str(len(args.noise_from)) + ' runs' if args.noise_from else 'given'}); "
          f"{args.series} series of 100 commits per row")
    print(table(noise, args.series, args.penalty or [2.0, 3.0, 4.0]))


if __name__ == "__main__":
    main()
