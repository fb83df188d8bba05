"""The layering holds: nothing below generation loads torch, diffusers or transformers, so
commands that only read files start in about a second."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "diffusers", "transformers")

# Every module of the stages that only read or write files, in import order (first offender wins).
TORCH_FREE = [
    "harness.errors", "harness.fileio", "harness.stages", "harness.environment", "harness.hub",
    "harness.console", "harness.checkpoints.registry", "harness.schedulers", "harness.spec",
    "harness.data.prompts", "harness.data.audio", "harness.data.references", "harness.data.synthetic",
    "harness.plan", "harness.plan.shard", "harness.store", "harness.merge",
    "harness.score.metrics", "harness.score.embed.registry", "harness.score.scoring", "harness.score.compare",
    "harness.score.metrics.wer", "harness.score.asr.whisper", "harness.score.asr.transcribe",
    "harness.results", "harness.report.plots", "harness.report.build",
    "harness.gate", "harness.gate.policy", "harness.gate.summary", "harness.gate.compare",
    "harness.gate.output", "harness.gate.sequential", "harness.text", "harness.verify",
    "harness.history.store", "harness.history.changepoints", "harness.history.report", "harness.cli",
]

_PROBE = """
import importlib, json, sys
heavy = {heavy!r}
for name in {modules!r}:
    importlib.import_module(name)
    loaded = [m for m in heavy if m in sys.modules]
    if loaded:
        print(json.dumps({{"module": name, "loaded": loaded}}))
        sys.exit(0)
print(json.dumps({{"module": None, "loaded": []}}))
"""


def _probe(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lower_layers_import_no_torch():
    result = _probe(_PROBE.format(heavy=HEAVY, modules=TORCH_FREE))
    assert result == {"module": None, "loaded": []}, f"{result['module']} loads {result['loaded']}"


def test_the_probe_sees_a_module_that_loads_torch():
    # The check above is only worth something if it catches a module that does load torch.
    result = _probe(_PROBE.format(heavy=HEAVY, modules=["harness.spec", "harness.generate.load"]))
    assert result["module"] == "harness.generate.load" and "torch" in result["loaded"]


_CLI = """
import contextlib, io, json, sys
from harness.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main({argv!r})
    except SystemExit as exit:
        code = exit.code
print(json.dumps({{"code": code, "loaded": [m for m in {heavy!r} if m in sys.modules], "out": out.getvalue()}}))
"""


@pytest.mark.parametrize("argv", [
    ["report", "--help"], ["gate", "--help"], ["merge", "--help"], ["prompts", "--help"],
    ["prompts", "smoke", "--limit", "2"], ["schedulers"], ["checkpoints", "list"], ["history", "--help"],
])
def test_reading_commands_start_without_torch(argv):
    result = _probe(_CLI.format(argv=argv, heavy=HEAVY))
    assert result["code"] in (0, None) and result["out"].strip()
    assert result["loaded"] == [], f"{' '.join(argv)} loaded {result['loaded']}"


def test_gate_on_benchmark_json_starts_without_torch(tmp_path):
    bench = {"machine_info": {"cpu": {"brand_raw": "x"}}, "benchmarks": [
        {"name": "test_a", "fullname": "b.py::test_a", "params": None,
         "stats": {"min": 1.0, "max": 1.2, "mean": 1.1, "stddev": 0.05, "median": 1.1, "rounds": 10,
                   "iqr": 0.05, "q1": 1.05, "q3": 1.15, "ops": 0.9}}]}
    (tmp_path / "a.json").write_text(json.dumps(bench))
    (tmp_path / "policy.toml").write_text('[[rule]]\nfigure = "benchmark:median_s"\nmax_regression = "10%"\n')
    argv = ["gate", str(tmp_path / "a.json"), "--baseline", str(tmp_path / "a.json"),
            "--policy", str(tmp_path / "policy.toml")]
    result = _probe(_CLI.format(argv=argv, heavy=HEAVY))
    assert result["loaded"] == [] and "pass" in result["out"].lower(), result
