"""Interleaved A/B latency sessions: baseline and candidate configurations run alternately.

Runner-to-runner spread on shared CI machines is far larger than the changes a gate should
catch, and drifts within a session (thermal state, neighbours). Alternating A and B call by call
(A B, then B A, ...) in one process exposes both to the same drift, and each round gives a
paired ratio. The sessions come back as two summaries whose per-round observations share keys,
so ``compare`` applies a paired test (Wilcoxon signed-rank on the log ratios).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.stages import GENERATION_STAGES
from harness.spec import Cell, ConfigError
from harness.data.prompts import Prompt
from harness.environment import fingerprint
from harness.gate.summary import CellSummary, Figure, Summary
from harness.measure.trackers import StageTimer
from harness.measure.stages import TOTAL, one_call
from harness.generate.load import PipelineCache
from harness.generate.run import prepare
from harness.plan import prompts_for

STAGES = (TOTAL, *GENERATION_STAGES)


@dataclass
class _Side:
    """One configuration of the session: its cells, prompt and a pipeline cache of its own."""

    config: Path
    cells: list[Cell]
    prompts: list[Prompt]
    allow_unsafe: bool
    cache: PipelineCache

    def prepare_cell(self, index: int) -> Callable[[], dict[str, float]]:
        """Load cell ``index`` with its scheduler; return a function timing one call of it."""
        cell = self.cells[index]
        loaded = self.cache.for_cell(cell, self.allow_unsafe)
        prompt = self.prompts[index]

        def call() -> dict[str, float]:
            timer = StageTimer(cell.device)
            one_call(loaded, cell, prompt.text, prompt.transcription, [0], timer)
            return timer.results()

        return call


def _side(config: str | Path, threads: int | None = None) -> _Side:
    spec, cells, prompts = prepare(config, threads)
    chosen = [prompts_for(c.checkpoint, prompts, spec.prompts.limit)[0] for c in cells]
    return _Side(Path(config), cells, chosen, spec.allow_unsafe_schedulers, PipelineCache())


class ABSession:
    """An A/B session that can be extended: ``add_rounds(k)`` times k more alternating rounds of
    every pair of cells and returns the summaries of all rounds so far (for sequential gating)."""

    def __init__(self, baseline_config: str | Path, candidate_config: str | Path, warmup: int = 1,
                 progress: bool = True, threads: int | None = None) -> None:
        # Both sides run in this one process: the baseline's threads setting (or --threads) holds.
        self.a, self.b = _side(baseline_config, threads), _side(candidate_config, threads)
        if len(self.a.cells) != len(self.b.cells):
            raise ConfigError(f"{self.a.config} has {len(self.a.cells)} cells and {self.b.config} has "
                              f"{len(self.b.cells)}; an A/B session pairs them in order, so both sweeps must "
                              "expand to the same number")
        self.warmup, self.progress = warmup, progress
        self.env = fingerprint()
        self.times: list[tuple[list, list]] = [([], []) for _ in self.a.cells]

    def label(self, i: int) -> str:
        """'<baseline cell> vs <candidate cell>' of pair ``i``."""
        return f"{self.a.cells[i].label} vs {self.b.cells[i].label}"

    def add_rounds(self, rounds: int) -> tuple[Summary, Summary]:
        """Time ``rounds`` more rounds of every pair (after ``warmup`` untimed calls a side)."""
        for i, (done_a, done_b) in enumerate(self.times):
            call_a, call_b = self.a.prepare_cell(i), self.b.prepare_cell(i)  # pipelines may have been swapped out
            new_a, new_b = _alternate(call_a, call_b, rounds, self.warmup, self.progress, self.label(i),
                                      first=len(done_a))
            done_a.extend(new_a)
            done_b.extend(new_b)
        return self.summaries()

    def summaries(self) -> tuple[Summary, Summary]:
        """One summary per side, keyed ``pair-<i>``, with every round so far."""
        out = (Summary(f"A/B baseline {self.a.config}", self.env), Summary(f"A/B candidate {self.b.config}", self.env))
        for i, times in enumerate(self.times):
            for summary, side in zip(out, times):
                summary.cells[f"pair-{i}"] = CellSummary(self.label(i), _figures(side))
        return out


def ab_session(baseline_config: str | Path, candidate_config: str | Path, rounds: int = 10,
               warmup: int = 1, progress: bool = True) -> tuple[Summary, Summary]:
    """Time the i-th cell of each configuration alternately; one summary per side."""
    if rounds < 2:
        raise ConfigError(f"rounds must be >= 2 for a paired test; got {rounds}")
    return ABSession(baseline_config, candidate_config, warmup, progress).add_rounds(rounds)


def _alternate(call_a, call_b, rounds: int, warmup: int, progress: bool, label: str,
               first: int = 0) -> tuple[list, list]:
    from tqdm.auto import tqdm

    for _ in range(max(warmup, 0)):
        call_a(), call_b()
    results: tuple[list, list] = ([], [])
    bar = tqdm(range(first, first + rounds), desc=f"A/B {label} (rounds {first + 1}-{first + rounds})",
               unit="round", disable=not progress)
    for r in bar:
        order = (0, 1) if r % 2 == 0 else (1, 0)  # ABBA: neither side always goes first
        for side in order:
            results[side].append((call_a, call_b)[side]())
    return results


def _figures(calls: list[dict[str, float]]) -> dict[str, Figure]:
    out = {}
    for stage in STAGES:
        if all(stage in c for c in calls):
            ms = [c[stage] * 1e3 for c in calls]
            out[f"latency_ms:{stage}:p50"] = Figure(
                float(np.median(ms)), "lower", "ms", "ratio", len(ms), samples=ms,
                keys=[f"round-{r}" for r in range(len(ms))],
            )
    return out
