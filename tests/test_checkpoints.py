"""Checkpoint registry and loading: local folders, hub ids offline, clear errors, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import require_espeak
from harness.checkpoints.registry import BUILTIN, PUBLISHED, CheckpointError, describe
from harness.generate.load import load_pipeline

PUBLISHED_IDS = ["cvssp/audioldm2", "cvssp/audioldm2-large", "cvssp/audioldm2-music",
                 "anhnct/audioldm2_gigaspeech", "anhnct/audioldm2_ljspeech"]


def test_registry_has_the_five_published_checkpoints():
    assert sorted(PUBLISHED) == sorted(PUBLISHED_IDS)
    speech = {c.id for c in PUBLISHED.values() if c.needs_transcription}
    assert speech == {"anhnct/audioldm2_gigaspeech", "anhnct/audioldm2_ljspeech"}
    assert all(PUBLISHED[i].max_new_tokens == 512 for i in speech)
    assert PUBLISHED["cvssp/audioldm2-music"].task == "music"


@pytest.mark.parametrize("checkpoint", PUBLISHED_IDS)
def test_missing_weights_error_names_checkpoint_cache_and_fix(checkpoint):
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        load_pipeline(checkpoint, "main", "fp32", "cpu")
    message = str(info.value)
    assert checkpoint in message and "revision main" in message
    assert "Hugging Face cache" in message and "HF_HUB_OFFLINE=1" in message
    assert f"hf download {checkpoint}" in message
    assert time.monotonic() - start < 30  # fails, never hangs


def test_without_offline_flag_network_attempt_fails_fast(tmp_path):
    # HF_HUB_OFFLINE unset: huggingface_hub tries the network; the test guard refuses at once.
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest, os; "
        "os.environ.pop('HF_HUB_OFFLINE', None)\n"
        "from harness.generate.load import load_pipeline\n"
        "from harness.checkpoints.registry import CheckpointError\n"
        "try:\n    load_pipeline('cvssp/audioldm2', None, 'fp32', 'cpu')\n"
        "except CheckpointError as e:\n    print('ERR', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_HOME"] = str(tmp_path / "hf")
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR cannot load cvssp/audioldm2" in out.stdout, out.stderr[-2000:]
    assert time.monotonic() - start < 120


def test_local_folder_loads_in_eval_mode_with_fixed_language_model(tiny_audio_path):
    loaded = load_pipeline(str(tiny_audio_path), None, "fp32", "cpu")
    assert loaded.info.task == "audio" and loaded.location == str(tiny_audio_path)
    modules = [m for m in loaded.pipe.components.values() if isinstance(m, torch.nn.Module)]
    assert modules and not any(m.training for m in modules)
    assert type(loaded.pipe.language_model).__name__ == "GPT2Model"
    assert loaded.pipe.generate_language_model.__func__.__module__ == "harness.generate.language_model"


def test_local_speech_folder_is_described_as_speech(tiny_speech_path):
    info = describe(str(tiny_speech_path))
    assert info.task == "speech" and info.needs_transcription and info.max_new_tokens == 512


def test_folder_that_is_not_audioldm2(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        describe(str(tmp_path))


def test_fp16_on_cpu_is_refused_by_name():
    with pytest.raises(ValueError, match="dtype 'fp16' needs a CUDA device"):
        load_pipeline("tiny-audio", None, "fp16", "cpu")


def test_builtin_names():
    assert set(BUILTIN) == {"tiny-audio", "tiny-speech", *(f"random:{i}" for i in PUBLISHED_IDS)}
    assert BUILTIN["tiny-speech"].needs_transcription


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_runs_on_cuda_fp16():
    loaded = load_pipeline("tiny-audio", None, "fp16", "cuda")
    assert loaded.pipe.unet.dtype == torch.float16 and loaded.pipe.device.type == "cuda"


def test_phonemizing_checkpoint_needs_espeak(tiny_speech, monkeypatch):
    from harness.generate.load import check_phonemizer

    require_espeak()
    monkeypatch.setattr(tiny_speech.pipe.tokenizer_2, "phonemize", True, raising=False)
    check_phonemizer(tiny_speech.pipe, "x")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(CheckpointError, match="apt-get install espeak-ng"):
        check_phonemizer(tiny_speech.pipe, "anhnct/audioldm2_ljspeech")


def test_espeak_phonemizes_a_transcription():
    from phonemizer import phonemize

    require_espeak()
    ipa = phonemize("the quick brown fox", language="en-us", backend="espeak", strip=True)
    assert ipa and ipa != "the quick brown fox" and "ð" in ipa
