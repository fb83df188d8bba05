"""Start-up time of commands that only read files, in fresh processes, against `python -c pass`.

All cases share one pytest-benchmark group, so the table's relative column is the ratio to a
bare interpreter; ``extra_info`` carries the ratio of each command's median to the baseline's
median measured in the same session. A command that pulled in torch (5+ s here) would show
as a ratio in the tens. Run: python -m pytest benchmarks/test_bench_startup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

BENCH_JSON = {"machine_info": {"cpu": {"brand_raw": "bench"}}, "benchmarks": [
    {"name": "test_x", "fullname": "b.py::test_x", "params": None,
     "stats": {"min": 1.0, "max": 1.2, "mean": 1.1, "stddev": 0.05, "median": 1.1, "rounds": 10,
               "iqr": 0.05, "q1": 1.05, "q3": 1.15, "ops": 0.9}}]}

_medians: dict[str, float] = {}


@pytest.fixture(scope="module")
def gate_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    (root / "a.json").write_text(json.dumps(BENCH_JSON))
    (root / "policy.toml").write_text('[[rule]]\nfigure = "benchmark:median_s"\nmax_regression = "10%"\n')
    return root


def _commands(root) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "harness"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "report --help": [*cli, "report", "--help"],
        "gate (pytest-benchmark JSON pair)": [*cli, "gate", str(root / "a.json"), "--baseline",
                                              str(root / "a.json"), "--policy", str(root / "policy.toml")],
        "prompts smoke": [*cli, "prompts", "smoke"],
    }


@pytest.mark.parametrize("name", ["python -c pass", "report --help", "gate (pytest-benchmark JSON pair)",
                                  "prompts smoke"])
def test_command_startup(benchmark, gate_files, name):
    benchmark.group = "start-up of file-reading commands (fresh process)"
    argv = _commands(gate_files)[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run() -> int:
        return subprocess.run(argv, capture_output=True, env=env, timeout=120).returncode

    code = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    assert code == 0
    _medians[name] = benchmark.stats.stats.median
    if name != "python -c pass" and "python -c pass" in _medians:
        benchmark.extra_info["ratio_to_python"] = _medians[name] / _medians["python -c pass"]
