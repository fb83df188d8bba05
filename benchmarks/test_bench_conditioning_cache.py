"""Sweep wall time with and without the conditioning cache (tiny checkpoint, CPU).

Both variants run in the same session, in one pytest-benchmark group, so the table's
relative column is the speed-up; ``extra_info`` carries the cache hit counts.
Run: python -m pytest benchmarks/test_bench_conditioning_cache.py
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest

from harness.generate.run import run_sweep

SWEEP = """
name = "bench-cache"
checkpoints = ["tiny-audio"]
schedulers = ["ddim", "euler", "dpmsolver++"]
steps = [5]
audio_lengths_s = [1.0]
seeds = [0, 1]
device = "cpu"
batch_size = 1
[prompts]
set = "smoke"
limit = 4
"""


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "sweep.toml"
    path.write_text(SWEEP)
    run_sweep(path, tmp_path_factory.mktemp("warm") / "run", progress=False)  # builds the tiny checkpoint
    return path


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "uncached"])
def test_sweep_wall_time(benchmark, sweep_file, cache):
    benchmark.group = "conditioning cache: 3 schedulers x 2 seeds x 4 prompts"
    counter = itertools.count()
    root = Path(tempfile.mkdtemp())

    def fresh_dir():
        return ((), {"run_dir": root / f"run{next(counter)}"})

    def sweep(run_dir):
        return run_sweep(sweep_file, run_dir, conditioning_cache=cache, progress=False)

    result = benchmark.pedantic(sweep, setup=fresh_dir, rounds=3, iterations=1)
    shutil.rmtree(root, ignore_errors=True)
    assert result.report.done == 24 and result.report.failed == 0
    benchmark.extra_info["samples"] = result.report.done
    benchmark.extra_info["conditioning_cache"] = cache
