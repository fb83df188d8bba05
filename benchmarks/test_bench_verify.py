"""Checking stored audio against its sha256: hashing every file vs the verdict cache.

Every reader of stored audio (``run`` resuming, ``score``, ``compare``, ``report``, ``merge``,
``verify``) checks each file against the sha256 in its row. A file that matched is remembered
by (real path, size, mtime_ns, inode) in ``<harness cache>/verified-audio.sqlite``, so a later
process pays a ``stat`` and one indexed lookup instead of reading and hashing the file.

* ``verify-hash``: a fresh cache (every file read and hashed; the OS page cache is warm, so this
  is the CPU cost, a lower bound of what a cold disk costs);
* ``verify-cached``: a later process (in-memory verdicts dropped, the cache file kept).

The cached test records ``speedup`` (median hash / median cached) in ``benchmark.extra_info``
(target >= 3x; a speed is shown as a ratio, never asserted).

Run: ``python -m pytest benchmarks/test_bench_verify.py -q``
"""

from __future__ import annotations

import os
import statistics

import numpy as np
import pytest

import harness.store as store_module
from harness.store import RunStore, SampleRecord, audio_problems

FILES = 100  # 10.24 s at 16 kHz, float32: 655 KB each
_SEEN: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from harness.spec import expand, parse_spec

    cell = expand(parse_spec({"name": "b", "checkpoints": ["tiny-audio"], "prompts": {"set": "smoke"}}), "cpu")[0]
    root = tmp_path_factory.mktemp("verify") / "run"
    store = RunStore(root)
    store.add_cells([cell], {})
    rng = np.random.default_rng(0)
    for i in range(FILES):
        store.write_sample(SampleRecord(cell.id, f"p{i}", "x", None, 0),
                           rng.uniform(-0.5, 0.5, 163840).astype(np.float32), 16000)
    rows = store.samples()
    store.close()
    for r in rows:  # written "a while ago": fresh files are never cached (coarse mtime clocks)
        os.utime(root / r["audio_path"], ns=(10**18, 10**18))
    return root, rows


def _fresh_verdicts(monkeypatch, cache_dir) -> None:
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(cache_dir))
    monkeypatch.setattr(store_module, "_VERDICTS", store_module._Verdicts())


def test_verify_hash(benchmark, run_folder, monkeypatch, tmp_path):
    root, rows = run_folder
    rounds = iter(range(1000))

    def setup():
        _fresh_verdicts(monkeypatch, tmp_path / f"cache{next(rounds)}")
        return (root, rows), {}

    assert benchmark.pedantic(audio_problems, setup=setup, rounds=5) == []
    _SEEN["hash"] = list(benchmark.stats.stats.data)


def test_verify_cached(benchmark, run_folder, monkeypatch, tmp_path):
    root, rows = run_folder
    _fresh_verdicts(monkeypatch, tmp_path / "cache")
    assert audio_problems(root, rows) == []  # fills the cache file

    def setup():
        store_module._VERDICTS.memory.clear()  # a later process: only the cache file remains
        return (root, rows), {}

    assert benchmark.pedantic(audio_problems, setup=setup, rounds=5) == []
    if "hash" not in _SEEN:
        pytest.skip("run together with test_verify_hash for the ratio")
    speedup = statistics.median(_SEEN["hash"]) / statistics.median(benchmark.stats.stats.data)
    benchmark.extra_info["speedup"] = round(speedup, 1)
