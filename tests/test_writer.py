"""The sample writer thread: order, draining, failures, and stores identical to inline writes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from harness.fileio import sha256_file
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


def _stored_audio(run_dir) -> dict:
    """(cell, prompt, seed) -> samples of every stored row, after checking the row is complete:
    status ok, the file's sha256 is the row's, and it holds n_samples samples at sample_rate."""
    store = RunStore.read_only(run_dir)
    try:
        rows = store.samples()
    finally:
        store.close()
    audio = {}
    for r in rows:
        assert r["status"] == "ok" and r["audio_path"], r
        path = run_dir / r["audio_path"]
        assert sha256_file(path) == r["audio_sha256"]
        rate, samples = wavfile.read(path)
        assert rate == r["sample_rate"] and samples.dtype == np.float32 and samples.shape == (r["n_samples"],)
        assert np.isfinite(samples).all() and np.abs(samples).max() > 0
        audio[(r["cell_id"], r["prompt_id"], r["seed"])] = samples
    return audio


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep_copies_to_pinned_memory_and_threaded_equals_inline_writes(make_sweep, tmp_path, monkeypatch):
    """On CUDA each batch's waveforms go device-to-host into pinned memory without blocking (the
    writer thread waits on the copy's event); the stored samples are complete and the same as
    with inline writes."""
    import harness.generate.local as local

    hosts = []
    real = local.generate_to_host

    def recording(*args, **kwargs):
        audio = real(*args, **kwargs)
        hosts.append(audio)
        return audio

    monkeypatch.setattr(local, "generate_to_host", recording)
    config = make_sweep(seeds=[0, 1, 2], device="cuda")  # 2 prompts x 3 seeds, batches of 2
    threaded = run_sweep(config, tmp_path / "threaded", progress=False)
    inline = run_sweep(config, tmp_path / "inline", progress=False, async_writes=False)
    assert threaded.report.done == inline.report.done == 6 and threaded.report.failed == inline.report.failed == 0
    assert all(cell.device == "cuda" for cell in threaded.cells)
    assert len(hosts) == 6  # three batches per run
    for host in hosts:
        assert host._copied is not None and host._host.is_pinned() and host._host.device.type == "cpu"
    a, b = _stored_audio(tmp_path / "threaded"), _stored_audio(tmp_path / "inline")
    assert sorted(a) == sorted(b) and len(a) == 6
    assert [r[:5] for r in _rows(tmp_path / "threaded")] == [r[:5] for r in _rows(tmp_path / "inline")]
    # Both runs queue the same kernels on the same GPU, so the audio is expected to be bit-identical;
    # cuDNN and cuBLAS promise that only under torch.use_deterministic_algorithms, so allow round-off
    # of 1e-5 of full scale (-100 dBFS). A copy read before it completed (uninitialised pinned
    # memory) or a buffer overwritten by the next batch differs by orders of magnitude more.
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-5, err_msg=str(key))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sweep_records_nvml_utilisation_in_the_duty_cycle(make_sweep, tmp_path, monkeypatch):
    """On CUDA the duty cycle holds NVML's mean GPU utilisation over the sweep, a percentage."""
    import functools

    import harness.generate.run as run_module
    from harness.measure.utilization import GpuUtilization

    # NVML is polled every 0.5 s and first read after one interval: a tiny sweep can end sooner
    # (then the figure is None), so poll every 10 ms here.
    monkeypatch.setattr(run_module, "GpuUtilization", functools.partial(GpuUtilization, interval_s=0.01))
    result = run_sweep(make_sweep(device="cuda", steps=[10]), tmp_path / "run", progress=False)
    assert result.report.done == 4
    store = RunStore.read_only(tmp_path / "run")
    try:
        duty = store.get_meta("duty_cycle")
    finally:
        store.close()
    assert duty == result.duty and 0 < duty["duty_cycle"] <= 1 and duty["call_seconds"] > 0
    utilisation = duty["gpu_utilization_mean"]
    assert isinstance(utilisation, float) and 0.0 <= utilisation <= 100.0
