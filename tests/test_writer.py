"""The sample writer thread: order, draining, failures, and stores identical to inline writes."""

from __future__ import annotations

import threading
import time

import pytest

from harness.generate.run import run_sweep
from harness.generate.writer import SampleWriter, WriterError
from harness.store import RunStore


def test_jobs_run_in_order_on_another_thread_and_close_drains_them():
    done, threads = [], set()
    writer = SampleWriter(max_pending=2)

    def job(i):
        def run():
            time.sleep(0.002)
            done.append(i)
            threads.add(threading.get_ident())
        return run

    for i in range(20):
        writer.submit(job(i))
    writer.close()
    assert done == list(range(20)) and threads and threading.get_ident() not in threads


def test_a_failed_job_stops_the_writer_and_names_the_first_failure():
    writer = SampleWriter()
    ran = []
    writer.submit(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    writer.submit(lambda: ran.append("after"))  # queued before the failure was seen: never written
    with pytest.raises(WriterError, match="No space left on device.*run again to resume"):
        writer.close()
    assert ran == []
    with pytest.raises(WriterError):
        writer.submit(lambda: None)


def test_inline_writer_raises_at_once():
    writer = SampleWriter(threaded=False)
    with pytest.raises(WriterError, match="boom"):
        writer.submit(lambda: (_ for _ in ()).throw(RuntimeError("boom")))


def _rows(run_dir):
    store = RunStore.read_only(run_dir)
    try:
        return [(r["cell_id"], r["prompt_id"], r["seed"], r["status"], r["audio_path"], r["audio_sha256"])
                for r in store.samples()]
    finally:
        store.close()


def test_threaded_and_inline_writes_give_identical_stores_and_a_duty_cycle(make_sweep, tmp_path):
    config = make_sweep(seeds=[0, 1, 2])
    threaded = run_sweep(config, tmp_path / "threaded", progress=False)
    inline = run_sweep(config, tmp_path / "inline", progress=False, async_writes=False)
    assert threaded.report.done == inline.report.done == 6
    assert _rows(tmp_path / "threaded") == _rows(tmp_path / "inline")
    duty = RunStore.read_only(tmp_path / "threaded").get_meta("duty_cycle")
    assert duty == threaded.duty and 0 < duty["duty_cycle"] <= 1 and duty["call_seconds"] > 0
    assert duty["gpu_utilization_mean"] is None  # CPU: no NVML figure rather than a wrong one
    assert run_sweep(config, tmp_path / "threaded", progress=False).duty is None  # nothing generated
