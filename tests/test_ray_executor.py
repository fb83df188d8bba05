"""The Ray executor on a local CPU cluster (2 one-CPU actors); skipped without ray installed."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import threading

import numpy as np
import pytest
import torch

from harness.generate.run import run_sweep


def _hashes(run_dir):
    db = sqlite3.connect(run_dir / "run.sqlite")
    rows = db.execute("SELECT cell_id, prompt_id, seed, audio_sha256, status FROM samples").fetchall()
    db.close()
    return {(c, p, s): (h, st) for c, p, s, h, st in rows}


def test_executor_ray_without_ray_says_how_to_install(make_sweep, monkeypatch, capsys, tmp_path):
    from harness.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["run", make_sweep(), "--run-dir", str(tmp_path / "run"), "--executor", "ray"]) == 2
    assert "pip install 'audioldm2-harness[ray]'" in capsys.readouterr().err
    assert main(["run", make_sweep(), "--workers", "2"]) == 2
    assert "--address and --workers need --executor ray" in capsys.readouterr().err


class _FakeRay:
    """Just enough of ray for the executor's resource arithmetic."""

    def __init__(self, cpus: int) -> None:
        self.cpus = cpus

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus)}


@pytest.mark.parametrize("threads, cpus, expected", [(None, 4, ({"num_cpus": 1}, 4)), (2, 5, ({"num_cpus": 2}, 2)),
                                                     (4, 4, ({"num_cpus": 4}, 1))])
def test_cpu_actors_reserve_one_cpu_per_torch_thread(monkeypatch, threads, cpus, expected):
    from harness.generate.ray import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", _FakeRay(cpus))
    executor = RayExecutor(store=None, threads=threads)  # type: ignore[arg-type]
    assert executor._actor_options({"cpu"}) == expected


def test_more_threads_per_actor_than_the_cluster_has_is_refused(monkeypatch):
    from harness.generate.ray import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", _FakeRay(2))
    with pytest.raises(ValueError, match="threads = 3 per actor, but the Ray cluster has 2 CPU"):
        RayExecutor(store=None, threads=3)._actor_options({"cpu"})  # type: ignore[arg-type]


@pytest.mark.parametrize("cli_threads, expected", [(None, 1), (2, 2)])
def test_run_sweep_gives_ray_actors_the_sweeps_threads(make_sweep, monkeypatch, tmp_path, cli_threads, expected):
    import harness.generate.ray as ray_executor
    from harness.generate.local import ExecutionReport

    seen = {}

    class Recorder:
        def __init__(self, *args, **kwargs):
            seen.update(kwargs)

        def run(self, batches):
            return ExecutionReport()

    monkeypatch.setattr(ray_executor, "RayExecutor", Recorder)
    before = torch.get_num_threads()
    try:
        run_sweep(make_sweep(threads=1), tmp_path / "run", progress=False, executor="ray", threads=cli_threads)
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == expected


class _Ref:
    def __init__(self, value) -> None:
        self.value = value


class _SyncActor:
    """An actor handle whose ``run.remote`` computes the batch at once."""

    def __init__(self, compute) -> None:
        self.run = type("Method", (), {"remote": staticmethod(lambda batch: _Ref(compute(batch)))})


class _SyncRay(_FakeRay):
    """A Ray stand-in whose actors compute at once in this process: the driver's own logic runs."""

    class exceptions:
        class RayActorError(Exception):
            pass

        class RayTaskError(Exception):
            pass

    def is_initialized(self) -> bool:
        return True

    def wait(self, refs, num_returns=1):
        return refs[:1], refs[1:]

    def get(self, ref):
        return ref.value

    def remote(self, cls):
        compute = self.compute
        options = type("Options", (), {"remote": staticmethod(lambda *args: _SyncActor(compute))})
        return type("ActorClass", (), {"options": staticmethod(lambda **kwargs: options)})

    @staticmethod
    def compute(batch):
        from harness.store import SampleRecord

        results = [(SampleRecord(cell_id=i.cell.id, prompt_id=i.prompt.id, prompt=i.prompt.text,
                                 transcription=None, seed=i.seed), np.zeros(160, np.float32), 16000)
                   for i, todo in zip(batch.items, batch.todo) if todo]
        return results, {}, 0.01, 0.0


def test_the_ray_driver_stores_results_on_its_writer_thread_once_each(make_sweep, monkeypatch):
    """Batches come back from the actors; the driver hands them to its writer thread (so it can
    wait for the next batch meanwhile), stores each sample once, and has stored all of them when
    run() returns."""
    from harness.generate.ray import RayExecutor
    from harness.generate.run import prepare
    from harness.plan import cut_batches

    spec, cells, prompts = prepare(make_sweep(schedulers=["ddim", "euler"], seeds=[0, 1], batch_size=2))
    batches = cut_batches(spec, cells, prompts, 2)
    writes = []

    class Store:
        def write_sample(self, record, audio, sample_rate):
            writes.append(((record.cell_id, record.prompt_id, record.seed), threading.get_ident()))

    monkeypatch.setitem(sys.modules, "ray", _SyncRay(2))
    report = RayExecutor(Store(), batch_size=2).run(batches)
    keys = [key for key, _ in writes]
    expected = [i.key for b in batches for i in b.items]
    assert sorted(keys) == sorted(expected) and len(set(keys)) == len(keys) == report.done == 8
    assert {thread for _, thread in writes} != {threading.get_ident()}
    assert report.call_seconds == pytest.approx(0.01 * len(batches))


@pytest.fixture(scope="module")
def ray_cluster():
    # .ci/run installs the ray extra and sets HARNESS_REQUIRE_RAY=1: there a missing Ray fails.
    ray = __import__("ray") if os.environ.get("HARNESS_REQUIRE_RAY") == "1" else pytest.importorskip("ray")
    from pathlib import Path

    here = str(Path(__file__).resolve().parents[1])
    env = {k: os.environ[k] for k in ("AUDIOLDM2_HARNESS_CACHE", "HF_HUB_OFFLINE", "OMP_NUM_THREADS",
                                      "TOKENIZERS_PARALLELISM") if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env}, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_ray_run_with_a_killed_actor_equals_a_local_run(ray_cluster, make_sweep, tmp_path):
    """2 actors, batches handed out as they free up; one actor is SIGKILLed mid-batch: its batch
    goes to another actor, nothing is lost or written twice, and the audio equals a local run's."""
    ray = ray_cluster
    config = make_sweep(schedulers=["ddim", "euler-ancestral"], seeds=[0, 1, 2], batch_size=2)  # 6 batches
    local = run_sweep(config, tmp_path / "local", progress=False)
    dispatched, killed = [], []

    def kill_the_first_actor_mid_batch(actor, batch):
        dispatched.append((actor._actor_id.hex(), batch.cell.id, batch.items[0].key))
        if not killed:
            pid = ray.get(actor.pid.remote())
            killed.append(actor._actor_id.hex())
            # The hook runs just before the batch is submitted; its first batch also loads the
            # pipeline, so 0.2 s later the actor is inside it on any machine (1 s once outlasted
            # the whole batch on a fast runner and the kill hit the actor's next one).
            threading.Timer(0.2, os.kill, (pid, signal.SIGKILL)).start()

    result = run_sweep(config, tmp_path / "ray", progress=False, executor="ray",
                       executor_options={"workers": 2, "on_dispatch": kill_the_first_actor_mid_batch})
    assert (result.report.done, result.report.failed) == (12, 0)
    assert _hashes(tmp_path / "ray") == _hashes(tmp_path / "local")
    # the duty cycle shares the actors' call seconds over wall x 2 actors; no driver-side NVML figure
    duty = result.duty
    assert duty["workers"] == 2 and 0 < duty["duty_cycle"] <= 1 and duty["gpu_utilization_mean"] is None
    assert duty["call_seconds"] > 0 and duty["setup_seconds"] > 0
    assert local.report.done == 12
    actors = {a for a, _, _ in dispatched}
    assert len(dispatched) == 7  # 6 batches + the one retried after the kill
    assert len(actors - set(killed)) >= 2  # the work was shared, and a replacement actor joined
    # Exactly one batch went out twice: first to the killed actor (whichever of its batches the
    # kill landed in), then to another actor.
    keys = [key for _, _, key in dispatched]
    retried = [d for d in dispatched if keys.count(d[2]) == 2]
    assert len(retried) == 2, dispatched
    assert retried[0][0] == killed[0] and retried[1][0] != killed[0]
    # actors keep their conditioning cache (and pipelines) from one batch to the next
    db = sqlite3.connect(tmp_path / "ray" / "run.sqlite")
    assert db.execute("SELECT COUNT(*) FROM samples WHERE conditioning_cached=1").fetchone()[0] > 0
    db.close()
    print("dispatches (actor, cell, first sample):", *dispatched, sep="\n  ")
