"""Duty cycle of the smoke sweep (pipeline-call seconds over wall seconds, with and without
per-cell set-up) with the sample writer thread against inline writes, without and with 20 ms
added to every sample write (a slow disk), in one session. ``extra_info`` has the duty cycles; the
group's relative column compares wall times.
Run: OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_writer.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest

from harness.generate.run import run_sweep
from harness.store import RunStore

SMOKE = Path(__file__).parent / "sweeps" / "smoke.toml"


@pytest.fixture(scope="module", autouse=True)
def built():
    root = Path(tempfile.mkdtemp())
    run_sweep(SMOKE, root / "warm", progress=False)  # builds the tiny checkpoints once
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("delay_ms", [0, 20])
@pytest.mark.parametrize("writes", ["thread", "inline"])
def test_smoke_sweep_duty_cycle(benchmark, monkeypatch, writes, delay_ms):
    benchmark.group = f"smoke sweep, {delay_ms} ms added per sample write"
    if delay_ms:
        real = RunStore.write_sample

        def slow(self, *args, **kwargs):
            time.sleep(delay_ms / 1000)
            return real(self, *args, **kwargs)

        monkeypatch.setattr(RunStore, "write_sample", slow)
    root = Path(tempfile.mkdtemp())
    result = benchmark.pedantic(lambda: run_sweep(SMOKE, root / "run", progress=False,
                                                  async_writes=writes == "thread"), rounds=1, iterations=1)
    shutil.rmtree(root, ignore_errors=True)
    assert result.report.done == 28 and result.duty is not None
    benchmark.extra_info.update({k: v for k, v in result.duty.items() if v is not None})
