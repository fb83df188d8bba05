"""Trackers: timing spans, CPU peak RSS per stage (with nesting), CUDA memory (GPU only)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from harness.measure.trackers import CpuMemoryTracker, CudaMemoryTracker, NullTracker, StageTimer, remove_hooks

MIB = 2**20


def test_timer_spans_and_repeats():
    timer = StageTimer("cpu")
    with timer.stage("outer"):
        for _ in range(3):
            with timer.stage("outer/inner"):
                time.sleep(0.02)
    durations = timer.durations()
    assert len(durations["outer/inner"]) == 3 and timer.counts() == {"outer/inner": 3, "outer": 1}
    assert all(0.015 <= d < 0.5 for d in durations["outer/inner"])
    assert timer.results()["outer"] >= timer.results()["outer/inner"]


def test_module_hooks_time_each_forward_and_detach():
    timer = StageTimer("cpu")
    layer = torch.nn.Linear(4, 4)
    handles = timer.hook_module(layer, "linear")
    layer(torch.ones(1, 4))
    layer(torch.ones(1, 4))
    remove_hooks(handles)
    layer(torch.ones(1, 4))
    assert timer.counts() == {"linear": 2}


def _touch(megabytes: int) -> np.ndarray:
    block = np.ones(megabytes * MIB // 8)  # ones, not empty: pages must really be resident
    return block


def test_cpu_peak_rss_per_stage_resets_between_stages():
    tracker = CpuMemoryTracker()
    assert tracker.resettable, "Linux /proc/self/clear_refs should be writable by the process"
    with tracker.stage("big"):
        block = _touch(300)
        del block
    with tracker.stage("small"):
        block = _touch(10)
        del block
    peaks = tracker.results()
    assert peaks["big"]["rss_peak_bytes"] - peaks["small"]["rss_peak_bytes"] > 200 * MIB


def test_cpu_nested_stage_does_not_hide_outer_peak():
    tracker = CpuMemoryTracker()
    with tracker.stage("outer"):
        block = _touch(300)
        del block
        with tracker.stage("outer/inner"):  # resets the counter after the outer peak
            small = _touch(5)
            del small
    peaks = tracker.results()
    assert peaks["outer"]["rss_peak_bytes"] - peaks["outer/inner"]["rss_peak_bytes"] > 200 * MIB


def test_null_tracker_keeps_no_state_and_removes_its_hooks():
    tracker = NullTracker()
    ran = []
    with tracker.stage("x"):
        ran.append(True)
    module, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    expected = module(x)
    handles = tracker.hook_module(module, "linear")
    assert len(module._forward_pre_hooks) == len(module._forward_hooks) == 1
    assert torch.equal(module(x), expected)
    remove_hooks(handles)
    assert not module._forward_pre_hooks and not module._forward_hooks
    assert ran == [True] and vars(tracker) == {}


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_memory_kinds_are_separate_and_reset_per_stage():
    tracker = CudaMemoryTracker("cuda")
    with tracker.stage("big"):
        x = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")
        del x
    with tracker.stage("small"):
        y = torch.empty(MIB, dtype=torch.uint8, device="cuda")
        del y
    peaks = tracker.results()
    assert peaks["big"]["allocated_peak_bytes"] >= 256 * MIB > peaks["small"]["allocated_peak_bytes"]
    assert peaks["big"]["reserved_peak_bytes"] >= peaks["big"]["allocated_peak_bytes"]
    assert "nvml_used_bytes" in peaks["big"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_timer_uses_events_without_sync_inside():
    timer = StageTimer("cuda")
    a = torch.randn(2048, 2048, device="cuda")
    with timer.stage("matmul"):
        for _ in range(10):
            a = a @ a / 2048
    assert timer.results()["matmul"] > 0


def _heap_blocks(megabytes: int) -> list[np.ndarray]:
    # 64 KiB blocks come from malloc's heap (below its mmap threshold): freeing them does not
    # lower the RSS by itself, as with a pipeline's many tensors.
    return [np.ones(64 * 1024 // 8) for _ in range(megabytes * 16)]


def test_cpu_stage_peaks_differ_when_malloc_keeps_freed_pages():
    """Stages that allocate differently get different figures, even though the allocator holds
    on to what an earlier stage freed (the process-wide peak then never falls on its own)."""
    tracker = CpuMemoryTracker()
    pins = []
    with tracker.stage("big"):
        blocks = _heap_blocks(200)
        pins.append(np.ones(16))  # allocated after the blocks: the heap's top cannot just shrink
        del blocks
    with tracker.stage("small"):
        block = _heap_blocks(10)
        del block
    peaks = tracker.results()
    assert peaks["big"]["rss_peak_bytes"] - peaks["small"]["rss_peak_bytes"] > 100 * MIB
    assert peaks["big"]["rss_growth_bytes"] > 150 * MIB
    assert 5 * MIB < peaks["small"]["rss_growth_bytes"] < 60 * MIB


def test_cpu_memory_without_a_resettable_peak_records_named_deltas(monkeypatch):
    import harness.measure.trackers as trackers

    monkeypatch.setattr(trackers, "_reset_hwm", lambda: False)
    tracker = CpuMemoryTracker()
    with tracker.stage("keeps"):
        kept = _touch(50)
    peaks = tracker.results()
    assert set(peaks["keeps"]) == {"rss_peak_since_start_bytes", "rss_delta_bytes"}
    assert peaks["keeps"]["rss_delta_bytes"] > 40 * MIB  # still resident at the stage's end
    del kept
