"""Shared test set-up: offline, no network, and the tiny checkpoints built once per session."""

from __future__ import annotations

import ipaddress
import os
import socket

# Before anything imports huggingface_hub: it reads these at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One intra-op thread for this process and every subprocess a test starts: on a busy 2-core
# machine the default oversubscribes (0.3 s calls took 30 s), and equal thread counts keep
# float results bit-identical between a test and the CLI processes it compares against.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def require_espeak() -> None:
    """Skip (with the reason) when espeak-ng is missing; fail instead where HARNESS_REQUIRE_ESPEAK=1 (CI)."""
    import shutil

    if shutil.which("espeak-ng") or shutil.which("espeak"):
        return
    message = "espeak-ng is not installed (apt-get install espeak-ng)"
    if os.environ.get("HARNESS_REQUIRE_ESPEAK") == "1":
        pytest.fail(f"HARNESS_REQUIRE_ESPEAK=1 but {message}")
    pytest.skip(message)


class NetworkBlocked(OSError):
    """Raised when a test tries to reach a non-loopback address."""


_real_connect = socket.socket.connect


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths are local
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS: not allowed


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"tests must not use the network (tried to connect to {address!r})")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect  # fail fast instead of hanging on any network access


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory) -> str:
    """A per-session cache folder so tests never touch (or depend on) the user's cache."""
    path = os.environ.get("AUDIOLDM2_HARNESS_TEST_CACHE") or str(tmp_path_factory.mktemp("harness-cache"))
    os.environ["AUDIOLDM2_HARNESS_CACHE"] = path
    return path


@pytest.fixture(scope="session")
def tiny_audio_path(harness_cache):
    """Folder of the built-in tiny text-to-audio checkpoint."""
    from harness.checkpoints.tiny import tiny_checkpoint_path

    return tiny_checkpoint_path("audio")


@pytest.fixture(scope="session")
def tiny_speech_path(harness_cache):
    """Folder of the built-in tiny speech checkpoint."""
    from harness.checkpoints.tiny import tiny_checkpoint_path

    return tiny_checkpoint_path("speech")


@pytest.fixture(scope="session")
def tiny_audio(harness_cache):
    """The loaded tiny text-to-audio pipeline (shared: tests must not mutate it, except scheduler)."""
    from harness.generate.load import load_pipeline

    return load_pipeline("tiny-audio", None, "fp32", "cpu")


@pytest.fixture(scope="session")
def tiny_speech(harness_cache):
    """The loaded tiny speech pipeline."""
    from harness.generate.load import load_pipeline

    return load_pipeline("tiny-speech", None, "fp32", "cpu")


@pytest.fixture
def make_sweep(tmp_path):
    """Factory: write a small sweep TOML (keyword arguments override the defaults); returns its path."""
    counter = iter(range(1000))

    def make(**overrides) -> str:
        return _write_sweep(tmp_path / f"sweep{next(counter)}.toml", **overrides)

    return make


@pytest.fixture(scope="session")
def sweep_writer():
    """make_sweep's writer for module-scoped fixtures: ``sweep_writer(path, **overrides)`` -> path."""
    return _write_sweep


@pytest.fixture(scope="session")
def base_same_noisy_runs(tiny_audio_path):
    """Factory: ``base_same_noisy_runs(sweep, root)`` runs ``sweep`` as root/base, an identical rerun
    root/same and a rerun root/noisy whose audio has Gaussian noise (sd 0.3) added; -> {name: folder}."""
    return _base_same_noisy


def _base_same_noisy(sweep, root):
    import numpy as np

    import harness.generate.local as local
    from harness.generate.run import run_sweep
    from harness.generate.sampling import HostAudio

    runs = {name: root / name for name in ("base", "same", "noisy")}
    run_sweep(sweep, runs["base"], progress=False)
    run_sweep(sweep, runs["same"], progress=False)
    original = local.generate_to_host

    def noisy(*args, **kwargs):
        audio = original(*args, **kwargs).numpy()
        audio = audio + np.random.default_rng(0).normal(0, 0.3, audio.shape).astype(audio.dtype)
        return HostAudio(torch.from_numpy(audio), audio.shape[-1])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(local, "generate_to_host", noisy)
        run_sweep(sweep, runs["noisy"], progress=False)
    return runs


@pytest.fixture(scope="session")
def named_reference_writer():
    """Factory: ``named_reference_writer(folder, prompt_ids)`` writes one distinct synthetic 0.5 s
    clip per id as ``<folder>/<id>.wav``, a reference that ``--pair-by stem`` pairs with those prompts."""
    return _write_named_reference


def _write_named_reference(folder, prompt_ids) -> None:
    from scipy.io import wavfile

    from harness.data.synthetic import synthetic_clips

    folder.mkdir(parents=True, exist_ok=True)
    for pid, (_, clip) in zip(prompt_ids, synthetic_clips(len(prompt_ids), duration_s=0.5)):
        wavfile.write(folder / f"{pid}.wav", 16000, clip)


def _write_sweep(path, **overrides) -> str:
    spec = {
        "name": "t", "checkpoints": ["tiny-audio"], "schedulers": ["ddim"], "steps": [3],
        "audio_lengths_s": [0.5], "seeds": [0, 1], "device": "cpu", "batch_size": 2,
        "prompts": {"set": "smoke", "limit": 2},
    }
    spec.update(overrides)
    lines = []
    for key, value in spec.items():
        if key != "prompts":
            lines.append(f"{key} = {_toml(value)}")
    lines.append("[prompts]")
    lines += [f"{k} = {_toml(v)}" for k, v in spec["prompts"].items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _toml(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@pytest.fixture
def fp32_cuda():
    """CUDA in true float32 for CPU comparisons: cuDNN's TF32 convolutions (on by default on Ampere
    and later) keep 10 mantissa bits, ~1e-3 relative, far above what the CPU comparisons allow.
    (Set and restored by hand: monkeypatch cannot undo torch.backends' module attributes.)"""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def cuda_embeds_like_cpu(fp32_cuda):
    """``check(name, clips, rel=1e-4, **options)``: the embedder ``name`` built on cuda and on cpu
    embeds ``clips`` (``Clip``s, through ``audio_of``) to outputs of the same shapes and dtype, each
    within ``rel`` of the CPU output's largest magnitude (a scale-relative bound: element-wise
    relative error means nothing next to ReLU zeros); returns (cuda, cpu) embedders."""
    import numpy as np

    from harness.score.embed.registry import get_embedder

    def check(name: str, clips, rel: float = 1e-4, **options):
        cuda, cpu = get_embedder(name, device="cuda", **options), get_embedder(name, device="cpu", **options)
        assert next(cuda.model.parameters()).device.type == "cuda"
        assert cuda.identity_key == cpu.identity_key  # the cache does not tell the devices apart
        inputs = [cpu.audio_of(clip) for clip in clips]
        (got, got_extra), (want, want_extra) = cuda.embed_audio_outputs(inputs), cpu.embed_audio_outputs(inputs)
        assert set(got_extra) == set(want_extra)
        for outputs, expected in [(got, want), *((got_extra[k], want_extra[k]) for k in want_extra)]:
            assert len(outputs) == len(expected) == len(clips)
            for a, b in zip(outputs, expected):
                assert a.dtype == np.float32 and a.shape == b.shape
                assert np.max(np.abs(a - b)) <= rel * np.max(np.abs(b)), (name, np.max(np.abs(a - b)))
        return cuda, cpu

    return check
