"""Stage timers. Knows nothing of AudioLDM 2: it times named spans and module forwards.

On CUDA each span records a pair of CUDA events and nothing synchronizes until ``results()``
is read, so timing never stalls the GPU queue inside the denoising loop; on CPU spans use
``time.perf_counter``. Nested names use ``/`` ("encode/t5"); top-level spans are disjoint and
tile the call, so they add up to the end-to-end time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class _CpuClock:
    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, start: float, end: float) -> float:
        return end - start

    def sync(self) -> None:
        pass


class _CudaClock:
    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return start.elapsed_time(end) / 1000.0

    def sync(self) -> None:
        torch.cuda.synchronize()


class StageTimer:
    """Collects named spans; ``results()`` returns seconds per name (summed over repeats)."""

    def __init__(self, device: str = "cpu") -> None:
        self._clock = _CudaClock() if str(device).startswith("cuda") else _CpuClock()
        self._spans: list[tuple[str, object, object]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block under ``name``."""
        start = self._clock.mark()
        try:
            yield
        finally:
            self._spans.append((name, start, self._clock.mark()))

    def hook_module(self, module: torch.nn.Module, name: str) -> list:
        """Time every forward of ``module`` under ``name``; returns handles to remove the hooks."""
        starts: list[object] = []

        def pre(*_args, **_kwargs) -> None:
            starts.append(self._clock.mark())

        def post(*_args, **_kwargs) -> None:
            self._spans.append((name, starts.pop(), self._clock.mark()))

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def results(self) -> dict[str, float]:
        """Seconds per stage name, summed over repeats (synchronizes once on CUDA)."""
        self._clock.sync()
        totals: dict[str, float] = defaultdict(float)
        for name, start, end in self._spans:
            totals[name] += self._clock.seconds(start, end)
        return dict(totals)

    def counts(self) -> dict[str, int]:
        """How many spans were recorded per name."""
        counts: dict[str, int] = defaultdict(int)
        for name, _, _ in self._spans:
            counts[name] += 1
        return dict(counts)


def remove_hooks(handles: list) -> None:
    """Remove hooks returned by ``StageTimer.hook_module``."""
    for handle in handles:
        handle.remove()
