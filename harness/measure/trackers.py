"""Trackers for named stages: time and memory. Knows nothing of AudioLDM 2.

Every tracker has ``stage(name)`` (a context manager) and ``hook_module(module, name)`` (time
or measure each forward of a module), so the code being measured is written once and a
latency pass and a memory pass just hand it different trackers; memory tracking never runs
inside a timed pass.

Names nest with ``/`` ("encode/t5"); top-level stages are disjoint and tile the call.

Timing: on CUDA each span records a pair of CUDA events and nothing synchronizes until
``results()``, so timing never stalls the GPU queue inside the denoising loop; on CPU spans
use ``time.perf_counter``.

Memory, three kinds, never mixed: on CUDA ``allocated`` and ``reserved`` peaks from the
caching allocator (reset at each stage boundary) and ``nvml_used`` (device-wide memory in use
by every process, from NVML, read at the end of each stage); on CPU the process's resident set
size. A process's RSS rarely falls when memory is freed (malloc keeps freed pages), so every
stage would show the same peak; at each CPU stage boundary the tracker first hands freed heap
pages back to the OS (glibc ``malloc_trim``), then resets the peak (Linux VmHWM, through
/proc/self/clear_refs), and records per stage ``rss_peak_bytes`` (the peak RSS within the stage)
and ``rss_growth_bytes`` (that peak minus the RSS when the stage began: what the stage itself
needed). Where the peak cannot be reset, it records ``rss_peak_since_start_bytes`` and
``rss_delta_bytes`` (RSS at the stage's end minus at its start) instead: the names say which.
"""

from __future__ import annotations

import ctypes
import functools
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
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
    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)
        self._last: torch.cuda.Event | None = None

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        # On the stream of the device the work runs on: on cuda:N that need not be the current device.
        event.record(torch.cuda.current_stream(self.device))
        self._last = event
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        return start.elapsed_time(end) / 1000.0

    def sync(self) -> None:
        # The last event, not the whole device: results read on the writer thread must not wait
        # for the next batch the generating thread has queued meanwhile.
        if self._last is not None:
            self._last.synchronize()


def _is_cuda(device: str | torch.device) -> bool:
    return str(device).startswith("cuda")


class Tracker:
    """Base: subclasses implement ``_enter(name)`` and ``_exit(name, token)``."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Track the enclosed block under ``name``."""
        token = self._enter(name)
        try:
            yield
        finally:
            self._exit(name, token)

    def hook_module(self, module: torch.nn.Module, name: str) -> list:
        """Track every forward of ``module`` under ``name``; returns handles for remove_hooks."""
        tokens: list[object] = []

        def pre(*_args, **_kwargs) -> None:
            tokens.append(self._enter(name))

        def post(*_args, **_kwargs) -> None:
            self._exit(name, tokens.pop())

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def _enter(self, name: str) -> object:
        return None

    def _exit(self, name: str, token: object) -> None:
        pass


class NullTracker(Tracker):
    """Tracks nothing: for calls whose cost is not being measured."""


class StageTimer(Tracker):
    """Collects timed spans; ``results()`` returns seconds per name (summed over repeats)."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self._clock = _CudaClock(device) if _is_cuda(device) else _CpuClock()
        self._spans: list[tuple[str, object, object]] = []

    def _enter(self, name: str) -> object:
        return self._clock.mark()

    def _exit(self, name: str, token: object) -> None:
        self._spans.append((name, token, self._clock.mark()))

    def durations(self) -> dict[str, list[float]]:
        """Seconds of every span per name, in order (synchronizes once on CUDA)."""
        self._clock.sync()
        out: dict[str, list[float]] = defaultdict(list)
        for name, start, end in self._spans:
            out[name].append(self._clock.seconds(start, end))
        return dict(out)

    def results(self) -> dict[str, float]:
        """Seconds per stage name, summed over repeats."""
        return {name: sum(values) for name, values in self.durations().items()}

    def counts(self) -> dict[str, int]:
        """How many spans were recorded per name."""
        return {name: len(values) for name, values in self.durations().items()}


class _PeakTracker(Tracker):
    """Peak counters that can only be reset globally, made correct for nested stages.

    Before every reset the current peak is folded into each open stage's running maximum, so
    an inner stage's reset never hides an outer stage's earlier peak.
    """

    def __init__(self) -> None:
        self.peaks: dict[str, dict[str, int]] = {}
        self._open: list[tuple[str, dict[str, int]]] = []

    def _read(self) -> dict[str, int]:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _fold(self) -> None:
        current = self._read()
        for _, running in self._open:
            for key, value in current.items():
                running[key] = max(running.get(key, 0), value)

    def _enter(self, name: str) -> object:
        self._fold()
        self._reset()
        self._open.append((name, {}))
        return None

    def _exit(self, name: str, token: object) -> None:
        self._fold()
        _, running = self._open.pop()
        previous = self.peaks.get(name, {})
        self.peaks[name] = {k: max(v, previous.get(k, 0)) for k, v in running.items()}

    def results(self) -> dict[str, dict[str, int]]:
        """Peak bytes per stage name and memory kind."""
        return {name: dict(values) for name, values in self.peaks.items()}


class CudaMemoryTracker(_PeakTracker):
    """Per-stage peak allocated / peak reserved bytes (caching allocator) and NVML device use."""

    def __init__(self, device: str | torch.device = "cuda") -> None:
        super().__init__()
        self.device = torch.device(device)
        self._nvml = _nvml_readable(self.device)

    def _reset(self) -> None:
        # The allocator's statistics are kept on the host at allocation time: no synchronize.
        torch.cuda.reset_peak_memory_stats(self.device)

    def _read(self) -> dict[str, int]:
        torch.cuda.synchronize(self.device)  # memory pass only: the queued work must have run
        values = {
            "allocated_peak_bytes": torch.cuda.max_memory_allocated(self.device),
            "reserved_peak_bytes": torch.cuda.max_memory_reserved(self.device),
        }
        if self._nvml:
            values["nvml_used_bytes"] = int(torch.cuda.device_memory_used(self.device))
        return values


def _nvml_readable(device: torch.device) -> bool:
    """Whether NVML answers for ``device``. torch's NVML helpers map torch's device index to
    NVML's through CUDA_VISIBLE_DEVICES (by index or UUID), so the right card is read."""
    try:
        torch.cuda.device_memory_used(device)
        return True
    except Exception:  # noqa: BLE001 - NVML is optional: no figure rather than a wrong one
        return False


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int | None:
    """A kB figure of /proc/self/status (``VmHWM``, ``VmRSS``) in bytes; None where there is none."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")  # Linux: reset the peak RSS counter (VmHWM) to current RSS
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc only; elsewhere freed pages stay counted
    except (OSError, AttributeError):
        return None


def _trim() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class CpuMemoryTracker(_PeakTracker):
    """Per-stage peak resident set size of this process and its growth over the stage's start."""

    def __init__(self) -> None:
        super().__init__()
        self.resettable = _reset_hwm()
        # Where the counter cannot be reset, say so in the names rather than mislabel the figures.
        self._label = "rss_peak_bytes" if self.resettable else "rss_peak_since_start_bytes"
        self._growth_label = "rss_growth_bytes" if self.resettable else "rss_delta_bytes"
        self._growth: dict[str, int] = {}

    def _reset(self) -> None:
        _trim()
        if self.resettable:
            _reset_hwm()

    def _read(self) -> dict[str, int]:
        value = _status_bytes("VmHWM")
        return {} if value is None else {self._label: value}

    def _enter(self, name: str) -> object:
        super()._enter(name)
        return _status_bytes("VmRSS")  # after the trim and reset: what the stage starts from

    def _exit(self, name: str, token: object) -> None:
        super()._exit(name, token)
        if token is None:
            return
        if self.resettable:
            end = self.peaks[name].get(self._label)
        else:
            _trim()
            end = _status_bytes("VmRSS")
        if end is not None:
            self._growth[name] = max(self._growth.get(name, 0), end - int(token))

    def results(self) -> dict[str, dict[str, int]]:
        """Peak bytes (and growth over the stage's start) per stage name and memory kind."""
        out = super().results()
        for name, growth in self._growth.items():
            out.setdefault(name, {})[self._growth_label] = growth
        return out


def memory_tracker(device: str | torch.device) -> CudaMemoryTracker | CpuMemoryTracker:
    """The memory tracker that applies to ``device``."""
    return CudaMemoryTracker(device) if _is_cuda(device) else CpuMemoryTracker()


def remove_hooks(handles: list) -> None:
    """Remove hooks returned by ``Tracker.hook_module``."""
    for handle in handles:
        handle.remove()
