"""The latency protocol on the tiny checkpoint: stage sums, statistics, bench command."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

from harness.measure.bench import bench_sweep
from harness.spec import expand, parse_spec
from harness.measure.trackers import NullTracker, StageTimer
from harness.measure.stages import Protocol, measure_cell, one_call, stage_sum, summarize
from harness.schedulers import build_scheduler


@pytest.fixture
def cell():
    spec = parse_spec({"name": "m", "checkpoints": ["tiny-audio"], "steps": [6], "audio_lengths_s": [1.0],
                       "prompts": {"set": "smoke"}})
    return expand(spec, "cpu")[0]


def test_stage_sum_matches_end_to_end_on_cpu(tiny_audio, cell):
    tiny_audio.pipe.scheduler = build_scheduler("ddim", {}, tiny_audio.base_scheduler)
    m = measure_cell(tiny_audio, cell, "rain on a roof", None, Protocol(warmup=1, repeats=3, memory=True), 1.5)
    for total, *stages in zip(m.durations["total"], m.durations["encode"], m.durations["denoise"],
                              m.durations["vae_decode"], m.durations["vocoder"]):
        assert abs(sum(stages) - total) <= 0.02 * total
    assert 0.98 <= m.headline()["stage_sum_over_total"] <= 1.0
    assert m.steps_per_call == 6
    assert set(m.durations) >= {"encode/clap_text", "encode/t5", "encode/projection", "encode/language_model",
                                "denoise/step", "total"}
    assert m.memory["denoise"]["rss_peak_bytes"] > 0
    head = m.headline()
    median = float(np.median(m.durations["total"]))
    assert head["rtf"] == pytest.approx(median / 1.0) and head["throughput_audio_s_per_s"] == pytest.approx(1 / median)
    assert head["load_s"] == 1.5 and "compile_s" not in head


def test_summary_statistics_match_numpy():
    values = [0.5, 0.1, 0.3, 0.9, 0.2, 0.4]
    stats = summarize(values)
    assert stats["median"] == pytest.approx(0.35) and stats["mean"] == pytest.approx(np.mean(values))
    assert stats["p90"] == pytest.approx(0.7) and stats["p99"] == pytest.approx(0.88)  # linear interpolation
    assert stats["std"] == pytest.approx(np.std(values, ddof=1)) and stats["n"] == 6
    assert stage_sum({"a": [1.0, 2.0], "a/b": [5.0], "total": [9.0], "c": [0.5]}) == 3.5


def test_instrumentation_does_not_change_audio(tiny_audio, cell):
    tiny_audio.pipe.scheduler = build_scheduler("ddim", {}, tiny_audio.base_scheduler)
    timed = one_call(tiny_audio, cell, "wind", None, [3, 4], StageTimer("cpu"))
    plain = one_call(tiny_audio, cell, "wind", None, [3, 4], NullTracker())
    assert np.array_equal(timed, plain)


def test_instrumented_call_resolves_the_device_no_more_often_than_a_bare_call(tiny_audio, cell, monkeypatch):
    # pipe._execution_device walks every module of the pipeline; a second walk per call was
    # most of the harness's overhead against a bare diffusers call on the tiny checkpoint
    tiny_audio.pipe.scheduler = build_scheduler("ddim", {}, tiny_audio.base_scheduler)
    pipeline_class = type(tiny_audio.pipe)
    walks = []
    original = pipeline_class._execution_device

    def counted(self):
        walks.append(1)
        return original.fget(self)

    monkeypatch.setattr(pipeline_class, "_execution_device", property(counted))
    tiny_audio.pipe("wind", num_inference_steps=2, audio_length_in_s=1.0, guidance_scale=3.5,
                    generator=torch.Generator("cpu").manual_seed(0))
    bare, walks[:] = len(walks), []
    one_call(tiny_audio, cell, "wind", None, [0], StageTimer("cpu"))
    assert bare >= 1 and len(walks) <= bare


def test_bench_command_stores_measurements(make_sweep, tmp_path):
    config = make_sweep(schedulers=["ddim", "heun"], steps=[3], latency={"repeats": 2, "batch_sizes": [1, 2]})
    result = bench_sweep(config, tmp_path / "run", progress=False)
    assert not result.cell_errors and len(result.measurements) == 4
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    kinds = {r[0] for r in db.execute("SELECT DISTINCT kind FROM measurements")}
    assert kinds == {"latency", "call", "memory", "headline"}
    # every timed call is kept (gates test significance on them), and their median is the stored one
    calls = [r[0] for r in db.execute(
        "SELECT value FROM measurements WHERE kind='call' AND stage='total' AND batch_size=1 "
        "AND cell_id=(SELECT cell_id FROM measurements LIMIT 1) ORDER BY metric")]
    median = db.execute("SELECT value FROM measurements WHERE kind='latency' AND stage='total' AND metric='median' "
                        "AND batch_size=1 AND cell_id=(SELECT cell_id FROM measurements LIMIT 1)").fetchone()[0]
    assert len(calls) == 2 and np.median(calls) == median
    heun_calls = db.execute(
        "SELECT value FROM measurements m JOIN cells c ON c.id = m.cell_id "
        "WHERE c.scheduler='heun' AND m.metric='unet_calls' AND m.batch_size=1").fetchone()[0]
    assert heun_calls == 5  # Heun: 2 UNet calls per step but the last
    medians = db.execute("SELECT COUNT(*) FROM measurements WHERE kind='latency' AND metric='median'").fetchone()[0]
    assert medians >= 4 * 9


def test_bench_refuses_options_that_do_not_apply_on_cpu(make_sweep, tmp_path):
    from harness.spec import ConfigError

    for override, needle in [({"cpu_offload": [True]}, "cpu_offload needs a CUDA device"),
                             ({"attention_backends": ["sdpa-flash"]}, "'sdpa-flash' needs a CUDA device"),
                             ({"compile_modes": ["reduce-overhead"]}, "needs a CUDA device"),
                             ({"dtypes": ["fp16"]}, "fp16")]:
        with pytest.raises(ConfigError, match=needle):
            bench_sweep(make_sweep(**override), tmp_path / "run", progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_stage_sum_matches_end_to_end_on_cuda():
    from harness.generate.load import load_pipeline

    spec = parse_spec({"name": "m", "checkpoints": ["tiny-audio"], "steps": [10], "audio_lengths_s": [1.0],
                       "prompts": {"set": "smoke"}, "device": "cuda"})
    cell = expand(spec, "cuda")[0]
    loaded = load_pipeline("tiny-audio", None, "fp32", "cuda")
    m = measure_cell(loaded, cell, "rain", None, Protocol(warmup=2, repeats=5, memory=True))
    assert 0.98 <= m.headline()["stage_sum_over_total"] <= 1.0
    assert m.memory["denoise"]["allocated_peak_bytes"] > 0


def test_gpu_validation_report_on_cpu_tiny(tmp_path):
    from harness.measure.gpu_validate import validate

    results, table = validate("tiny-audio", "cpu", 1.0, pairs=[("dpmsolver++", 3), ("ddim", 4)], dtypes=("fp32",),
                              compile_modes=("none",), repeats=2, run_dir=tmp_path)
    assert len(results) == 2 and all(len(r.measurements) == 1 and not r.cell_errors for r in results)
    rows = [line for line in table.splitlines() if line.startswith("| tiny-audio")]
    assert len(rows) == 2 and "dpmsolver++/3st" in rows[0] and "ddim/4st" in rows[1]


def test_gpu_validate_refuses_without_cuda(monkeypatch):
    from harness.measure.gpu_validate import validate

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        validate()


def test_environment_fingerprint_names_versions_and_machine():
    from harness.environment import fingerprint

    env = fingerprint()
    assert set(env["versions"]) >= {"audioldm2-harness", "diffusers", "transformers", "torch", "python"}
    assert env["torch_threads"] == torch.get_num_threads() and env["cpu"]
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    if torch.cuda.is_available():
        assert env["gpu"] and env["cuda_version"] and "driver_version" in env


def test_bench_rerun_replaces_figures_it_no_longer_emits(make_sweep, tmp_path):
    config = make_sweep(steps=[3], latency={"repeats": 2})
    bench_sweep(config, tmp_path / "run", progress=False)
    bench_sweep(config, tmp_path / "run", progress=False, memory=False)
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    assert db.execute("SELECT COUNT(*) FROM measurements WHERE kind='memory' AND stage != 'weights'").fetchone()[0] == 0


def test_peak_column_never_reports_reserved_memory():
    from types import SimpleNamespace

    from harness.measure.bench_table import bench_rows

    m = SimpleNamespace(
        cell=SimpleNamespace(id="c", label="l"), batch_size=1, steps_per_call=1,
        memory={"denoise": {"allocated_peak_bytes": 2**20, "reserved_peak_bytes": 8 * 2**20}},
        stats=lambda: {s: {"median": 1.0, "p90": 1.0} for s in ["total", "denoise/step"]},
        headline=lambda: {"stage_sum_over_total": 1.0, "rtf": 1.0, "first_call_s": 1.0},
    )
    assert bench_rows([m])[0]["peak_mib"] == 1.0


def test_bench_times_the_sweeps_batch_size_and_threads_are_applied_and_recorded(make_sweep, tmp_path, capsys):
    """Without [latency].batch_sizes a call is for the sweep's batch_size samples; threads = 1 in the
    sweep sets torch's threads and lands in the environment; the table prints memory per stage."""
    import json

    from harness.measure.bench_table import print_bench

    before = torch.get_num_threads()
    try:
        config = make_sweep(steps=[2], batch_size=3, threads=1, latency={"repeats": 2})
        result = bench_sweep(config, tmp_path / "run", progress=False)
        assert [m.batch_size for m in result.measurements] == [3]
        assert torch.get_num_threads() == 1
        db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
        env = json.loads(db.execute("SELECT value FROM meta WHERE key='environment'").fetchone()[0])
        assert env["torch_threads"] == 1
        print_bench(result)
        out = capsys.readouterr().out
        assert "memory per stage" in out and "rss_growth_bytes" in out
        config = make_sweep(steps=[2], batch_size=3, latency={"repeats": 2, "memory": False, "batch_sizes": [1]})
        result = bench_sweep(config, tmp_path / "run2", progress=False, threads=2)
        assert [m.batch_size for m in result.measurements] == [1] and torch.get_num_threads() == 2
        print_bench(result)
        assert "nan" not in capsys.readouterr().out  # no memory pass: "-", not nan
    finally:
        torch.set_num_threads(before)


def test_gpu_utilization_reads_torchs_nvml_helper_and_samples_once_at_exit(monkeypatch):
    """The poller reads torch.cuda.utilization (which maps the device through CUDA_VISIBLE_DEVICES)
    for the sweep's device, samples once more at exit (a sweep shorter than an interval still
    gets a figure), and gives no figure where NVML does not answer or the device is the CPU."""
    from harness.measure.utilization import GpuUtilization

    asked = []
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: asked.append(device) or 40)
    with GpuUtilization("cuda:1", interval_s=60) as gpu:
        pass
    assert gpu.samples == [40.0] and gpu.mean() == 40.0 and set(asked) == {"cuda:1"}

    def no_nvml(device=None):
        raise RuntimeError("NVML not found")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    with GpuUtilization("cuda", interval_s=60) as gpu:
        pass
    assert gpu.mean() is None
    with GpuUtilization("cpu") as gpu:
        pass
    assert gpu.mean() is None
