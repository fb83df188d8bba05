"""The latency and memory protocol for one cell: what a performance engineer gates on.

One *call* is a full, uncached pipeline call for ``batch_size`` samples of one prompt: text
encoders, projection, GPT-2, denoising loop, VAE decode, vocoder. Per cell:

* cold start, reported apart: pipeline load time, the first call (which includes any
  torch.compile work), and compile time = first call - steady median (when compiling);
* ``warmup`` calls, excluded (the first call counts as the first warm-up);
* ``repeats`` timed calls with a ``StageTimer`` only: median, p90, p99, mean and standard
  deviation per stage; real-time factor (compute seconds per second of audio) and throughput
  (seconds of audio per wall second);
* optionally one memory pass with the memory tracker alone, so tracking never distorts timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from harness.stages import DENOISE_STEP, TOTAL
from harness.spec import Cell
from harness.measure.trackers import StageTimer, Tracker, memory_tracker
from harness.generate.conditioning import ConditioningKey, encode, stack
from harness.generate.sampling import generate
from harness.generate.load import LoadedPipeline



@dataclass(frozen=True)
class Protocol:
    """How many calls to warm up with and to time, and whether to run a memory pass."""

    warmup: int = 1
    repeats: int = 5
    memory: bool = True
    batch_size: int = 1


@dataclass
class CellMeasurement:
    """Everything measured for one cell at one batch size."""

    cell: Cell
    batch_size: int
    load_s: float | None
    first_call_s: float
    durations: dict[str, list[float]]  # stage -> seconds per timed call
    steps_per_call: int
    memory: dict[str, dict[str, int]] = field(default_factory=dict)

    def stats(self) -> dict[str, dict[str, float]]:
        """Median, p90, p99, mean, std and n of each stage over the timed calls."""
        return {stage: summarize(values) for stage, values in self.durations.items()}

    @property
    def audio_seconds_per_call(self) -> float:
        """Seconds of audio one call produces."""
        return self.cell.audio_length_s * self.batch_size

    def headline(self) -> dict[str, float]:
        """Real-time factor, throughput and cold-start figures from the median call."""
        median = float(np.median(self.durations[TOTAL]))
        out = {
            "rtf": median / self.audio_seconds_per_call,
            "throughput_audio_s_per_s": self.audio_seconds_per_call / median,
            "first_call_s": self.first_call_s,
            "stage_sum_over_total": stage_sum(self.durations) / sum(self.durations[TOTAL]),
        }
        if self.load_s is not None:  # only the first call after a load is a cold start
            out["load_s"] = self.load_s
            if self.cell.runtime.compile != "none":
                out["compile_s"] = max(0.0, self.first_call_s - median)
        return out


def summarize(values: list[float]) -> dict[str, float]:
    """Order statistics of a list of seconds (numpy's linear-interpolation percentiles)."""
    arr = np.asarray(values, dtype=np.float64)
    return {
        "median": float(np.median(arr)), "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": float(arr.size),
    }


def stage_sum(durations: dict[str, list[float]]) -> float:
    """Sum of the top-level stages (names without '/'), excluding the end-to-end total."""
    return sum(sum(v) for k, v in durations.items() if "/" not in k and k != TOTAL)


def one_call(loaded: LoadedPipeline, cell: Cell, prompt: str, transcription: str | None,
             seeds: list[int], tracker: Tracker) -> np.ndarray:
    """A full uncached call for ``len(seeds)`` samples of one prompt, tracked end to end."""
    guided = cell.guidance_scale > 1.0
    key = ConditioningKey(prompt, transcription if loaded.info.needs_transcription else None,
                          cell.negative_prompt, guided, cell.max_new_tokens)
    with loaded.call_context(), tracker.stage(TOTAL):
        cond = encode(loaded.pipe, key, tracker)
        batch = stack([cond] * len(seeds), guided)
        return generate(loaded.pipe, batch, seeds, cell.steps, cell.guidance_scale,
                        cell.audio_length_s, tracker)


def measure_cell(loaded: LoadedPipeline, cell: Cell, prompt: str, transcription: str | None,
                 protocol: Protocol, load_s: float | None = None) -> CellMeasurement:
    """Run the protocol for one cell whose scheduler is already set on ``loaded.pipe``."""
    seeds = list(range(protocol.batch_size))
    start = time.perf_counter()
    one_call(loaded, cell, prompt, transcription, seeds, StageTimer(cell.device))
    _sync(cell.device)
    first_call_s = time.perf_counter() - start
    for _ in range(max(0, protocol.warmup - 1)):
        one_call(loaded, cell, prompt, transcription, seeds, StageTimer(cell.device))
    durations: dict[str, list[float]] = {}
    steps = 0
    for _ in range(protocol.repeats):
        timer = StageTimer(cell.device)
        one_call(loaded, cell, prompt, transcription, seeds, timer)
        steps = timer.counts().get(DENOISE_STEP, 0)
        for stage, seconds in timer.results().items():
            durations.setdefault(stage, []).append(seconds)
    memory = {}
    if protocol.memory:
        tracker = memory_tracker(cell.device)
        one_call(loaded, cell, prompt, transcription, seeds, tracker)
        memory = tracker.results()
    return CellMeasurement(cell, protocol.batch_size, load_s, first_call_s, durations, steps, memory)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
