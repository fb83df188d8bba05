"""Stage latencies and the harness's own overhead.

* tiny checkpoint on CPU (runs in CI): one uncached pipeline call, stage times in extra_info;
* full-size random-weight checkpoints (CUDA only): the same, at 10.24 s of audio;
* overhead: an instrumented harness call against a bare diffusers call, interleaved in one
  run (the order alternates each round), reported as a ratio; target <= 1.02.

Run: python -m pytest benchmarks/test_bench_stages.py --benchmark-json=stages.json
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from harness.spec import expand, parse_spec
from harness.measure.trackers import StageTimer
from harness.measure.stages import one_call
from harness.generate.load import load_pipeline
from harness.schedulers import build_scheduler


def _cell(checkpoint: str, device: str, steps: int, length: float, dtype: str = "fp32"):
    spec = parse_spec({"name": "b", "checkpoints": [checkpoint], "steps": [steps], "audio_lengths_s": [length],
                       "dtypes": [dtype], "prompts": {"set": "smoke"}, "device": device})
    return expand(spec, device)[0]


@pytest.fixture(scope="module")
def tiny():
    loaded = load_pipeline("tiny-audio", None, "fp32", "cpu")
    loaded.pipe.scheduler = build_scheduler("ddim", {}, loaded.base_scheduler)
    return loaded


def _bench_stages(benchmark, loaded, cell, rounds):
    timings: list[dict[str, float]] = []

    def call():
        timer = StageTimer(cell.device)
        one_call(loaded, cell, "A dog barks in a backyard", None, [0], timer)
        timings.append(timer.results())

    benchmark.pedantic(call, rounds=rounds, warmup_rounds=1, iterations=1)
    for stage in timings[0]:
        benchmark.extra_info[f"{stage}_median_s"] = float(np.median([t[stage] for t in timings]))
    benchmark.extra_info["steps"] = cell.steps
    benchmark.extra_info["audio_length_s"] = cell.audio_length_s


def test_tiny_stage_latencies_cpu(benchmark, tiny):
    benchmark.group = "stages: tiny-audio, CPU, DDIM 10 steps, 1 s"
    _bench_stages(benchmark, tiny, _cell("tiny-audio", "cpu", 10, 1.0), rounds=10)


def test_harness_overhead_ratio(benchmark, tiny):
    benchmark.group = "overhead: instrumented harness call / bare diffusers call"
    cell = _cell("tiny-audio", "cpu", 10, 1.0)
    bare_s: list[float] = []
    harness_s: list[float] = []
    cpu_s: dict[str, list[float]] = {"bare": [], "harness": []}  # process CPU time: far less
    # sensitive than wall time to other work on a shared runner (single-threaded torch here)

    def bare():
        tiny.pipe("A dog barks in a backyard", num_inference_steps=10, audio_length_in_s=1.0,
                  guidance_scale=3.5, generator=torch.Generator("cpu").manual_seed(0))

    def harness():
        one_call(tiny, cell, "A dog barks in a backyard", None, [0], StageTimer("cpu"))

    def pair():
        first, second = (bare, harness) if len(bare_s) % 2 == 0 else (harness, bare)
        for fn in (first, second):
            start, cpu_start = time.perf_counter(), time.process_time()
            fn()
            (bare_s if fn is bare else harness_s).append(time.perf_counter() - start)
            cpu_s["bare" if fn is bare else "harness"].append(time.process_time() - cpu_start)

    rounds = int(os.environ.get("HARNESS_OVERHEAD_ROUNDS", "20"))
    benchmark.pedantic(pair, rounds=rounds, warmup_rounds=1, iterations=1)
    bare_s, harness_s = bare_s[-rounds:], harness_s[-rounds:]  # drop the warm-up pair
    ratios = np.array(harness_s) / np.array(bare_s)
    cpu_ratios = np.array(cpu_s["harness"][-rounds:]) / np.array(cpu_s["bare"][-rounds:])
    benchmark.extra_info.update({
        "cpu_time_ratio_median": float(np.median(cpu_ratios)),
        "cpu_time_ratio_p10": float(np.percentile(cpu_ratios, 10)),
        "cpu_time_ratio_p90": float(np.percentile(cpu_ratios, 90)),
        "ratio_of_medians": float(np.median(harness_s) / np.median(bare_s)),
        "ratio_median": float(np.median(ratios)),
        "ratio_p10": float(np.percentile(ratios, 10)), "ratio_p90": float(np.percentile(ratios, 90)),
        "bare_median_s": float(np.median(bare_s)), "harness_median_s": float(np.median(harness_s)),
    })


FULL_SIZE = ["cvssp/audioldm2", "cvssp/audioldm2-large", "cvssp/audioldm2-music"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("like", FULL_SIZE)
def test_full_size_stage_latencies_cuda(benchmark, like):
    benchmark.group = f"stages: random {like}, CUDA fp16, DPM-Solver++ 20 steps, 10.24 s"
    loaded = load_pipeline(f"random:{like}", None, "fp16", "cuda")
    loaded.pipe.scheduler = build_scheduler("dpmsolver++", {}, loaded.base_scheduler)
    _bench_stages(benchmark, loaded, _cell(f"random:{like}", "cuda", 20, 10.24, "fp16"), rounds=5)
