"""Tiny offline AudioLDM 2 checkpoints: generation, byte-reproducible saves, reload, cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.checkpoints import tiny
from harness.checkpoints.tiny import (
    FAMILIES,
    build_tiny_pipeline,
    save_tiny_checkpoint,
    tiny_checkpoint_path,
)
from harness.generate.language_model import patch_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A dog barks while cars pass by"
TRANSCRIPTION = "hello world, this is a tiny test."

# Published model_index.json entries (cvssp/audioldm2 and anhnct/audioldm2_ljspeech), written
# out here rather than imported, so a drift in the builder makes these tests fail.
PUBLISHED_CLASSES = {
    "feature_extractor": ["transformers", "ClapFeatureExtractor"],
    "language_model": ["transformers", "GPT2Model"],
    "projection_model": ["audioldm2", "AudioLDM2ProjectionModel"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "ClapModel"],
    "tokenizer": ["transformers", "RobertaTokenizerFast"],
    "unet": ["audioldm2", "AudioLDM2UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "vocoder": ["transformers", "SpeechT5HifiGan"],
}
PUBLISHED_SECOND_ENCODER = {
    "audio": {
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
    },
    "speech": {
        "text_encoder_2": ["transformers", "VitsModel"],
        "tokenizer_2": ["transformers", "VitsTokenizer"],
    },
}
PUBLISHED_SCHEDULER = {
    "beta_end": 0.0195,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.0015,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
}


def _ready(pipe):
    patch_pipeline(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, family: str, steps: int = 10, max_new_tokens: int | None = None, **kwargs):
    extra = {"transcription": TRANSCRIPTION} if family == "speech" else {}
    return pipe(
        PROMPT,
        num_inference_steps=steps,
        audio_length_in_s=kwargs.pop("audio_length_in_s", 1.0),
        guidance_scale=3.5,
        generator=torch.Generator().manual_seed(0),
        max_new_tokens=max_new_tokens,
        **extra,
        **kwargs,
    ).audios


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _realign(pipe) -> None:
    # from_pretrained leaves tensors at unaligned offsets of the safetensors buffer (the only
    # difference found from the in-memory build), and GEMMs on them round differently in the
    # last bit. Fresh copies are 64-byte aligned, and the audio is then bit-identical.
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()


@pytest.fixture(scope="module")
def pipes():
    """In-memory tiny pipelines (seed 0), built once per family."""
    return {family: _ready(build_tiny_pipeline(family)) for family in FAMILIES}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Seed-0 checkpoint folders, saved once per family."""
    root = tmp_path_factory.mktemp("tiny-saved")
    return {family: save_tiny_checkpoint(family, root / family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_generates_finite_audio_at_16khz(pipes, family):
    pipe = pipes[family]
    audio = _generate(pipe, family, max_new_tokens=8)
    assert pipe.vocoder.config.sampling_rate == 16000
    assert audio.shape == (1, 16000)
    assert np.isfinite(audio).all()
    assert 1e-3 < np.abs(audio).max() <= 1.0  # not digital silence, within full scale


@pytest.mark.parametrize("family", FAMILIES)
def test_default_length_follows_unet_sample_size(pipes, family):
    pipe = pipes[family]
    audio = _generate(pipe, family, steps=2, max_new_tokens=2, audio_length_in_s=None)
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    frames = pipe.unet.config.sample_size * vae_scale
    samples_per_frame = int(np.prod(pipe.vocoder.config.upsample_rates))
    assert samples_per_frame == 160  # 10 ms mel hop at 16 kHz, as published
    assert audio.shape == (1, frames * samples_per_frame)


def test_speech_runs_with_published_max_new_tokens(pipes, monkeypatch):
    pipe = pipes["speech"]
    lm_outputs = []
    patched = pipe.generate_language_model

    def spy(*args, **kwargs):
        out = patched(*args, **kwargs)
        lm_outputs.append(tuple(out.shape))
        return out

    monkeypatch.setattr(pipe, "generate_language_model", spy)
    audio = _generate(pipe, "speech", steps=2, max_new_tokens=512)
    assert audio.shape == (1, 16000) and np.isfinite(audio).all()
    # prompt and negative prompt (classifier-free guidance): 512 GPT-2 states each
    assert lm_outputs == [(1, 512, pipe.language_model.config.n_embd)] * 2


def test_speech_tokenizer_fits_pipeline_contract(pipes):
    pipe = pipes["speech"]
    tok = pipe.tokenizer_2
    assert tok.pad_token_id == 0
    assert len(tok) > 182 and tok.convert_ids_to_tokens(182) == "<eos>"
    assert tok.model_max_length == pipe.projection_model.config.max_seq_length
    ids = tok(TRANSCRIPTION, padding="max_length", max_length=tok.model_max_length).input_ids
    assert 0 in ids  # so the pipeline finds a pad to overwrite with its end marker
    assert tok.unk_token_id not in ids[: ids.index(0)]


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_folder_has_published_classes(saved, family):
    index = json.loads((saved[family] / "model_index.json").read_text())
    expected = {**PUBLISHED_CLASSES, **PUBLISHED_SECOND_ENCODER[family]}
    assert {name: index[name] for name in expected} == expected
    scheduler = json.loads((saved[family] / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "DDIMScheduler"
    assert {k: scheduler[k] for k in PUBLISHED_SCHEDULER} == PUBLISHED_SCHEDULER
    lm = json.loads((saved[family] / "language_model" / "config.json").read_text())
    assert lm["architectures"] == ["GPT2Model"] and lm["max_new_tokens"] == 8
    assert lm["bos_token_id"] < lm["vocab_size"] and lm["eos_token_id"] < lm["vocab_size"]
    assert all(not p.name.endswith(".bin") for p in saved[family].rglob("*"))


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_reproduces_in_memory_audio(pipes, saved, family):
    from diffusers import AudioLDM2Pipeline
    from transformers import GPT2LMHeadModel, GPT2Model

    expected = _generate(pipes[family], family, max_new_tokens=8)
    reloaded = _ready(AudioLDM2Pipeline.from_pretrained(saved[family]))
    assert type(reloaded.language_model) is GPT2Model
    assert not isinstance(reloaded.language_model, GPT2LMHeadModel)
    assert all(
        not m.training for m in reloaded.components.values() if isinstance(m, torch.nn.Module)
    )
    as_loaded = _generate(reloaded, family, max_new_tokens=8)
    assert np.abs(as_loaded - expected).max() <= 1e-6  # measured ~5e-7: see _realign
    _realign(reloaded)
    np.testing.assert_array_equal(_generate(reloaded, family, max_new_tokens=8), expected)


@pytest.mark.slow  # a fresh interpreter imports torch, diffusers and transformers again
def test_save_is_byte_identical_across_dirs_and_processes(saved, tmp_path):
    again = {f: save_tiny_checkpoint(f, tmp_path / "again" / f) for f in FAMILIES}
    # A fresh interpreter too: hash seeds and thread pools differ there.
    script = (
        "import sys; from pathlib import Path;"
        "from harness.checkpoints.tiny import save_tiny_checkpoint as s;"
        "[s(f, Path(sys.argv[1]) / f) for f in ('audio', 'speech')]"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    env["OMP_NUM_THREADS"] = "1"
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "subprocess")], check=True, env=env
    )
    for family in FAMILIES:
        reference = _digests(saved[family])
        assert any(name.endswith(".safetensors") for name in reference)
        assert any(name.startswith("tokenizer_2/") for name in reference)
        assert _digests(again[family]) == reference
        assert _digests(tmp_path / "subprocess" / family) == reference


@pytest.mark.parametrize("family", FAMILIES)
def test_seed_changes_weights_and_leaves_global_rng_alone(pipes, family):
    torch.manual_seed(1234)
    before = torch.random.get_rng_state()
    other = build_tiny_pipeline(family, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    for name in ("vae", "text_encoder", "text_encoder_2", "language_model", "unet", "vocoder"):
        ref, new = pipes[family].components[name].state_dict(), other.components[name].state_dict()
        assert ref.keys() == new.keys()
        assert any(not torch.equal(ref[k], new[k]) for k in ref), name


def test_tiny_checkpoint_path_builds_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    first = tiny_checkpoint_path("audio")  # cache dir from the environment
    assert first == tmp_path / f"tiny-audio-{tiny.TINY_VERSION}"
    assert (first / "model_index.json").is_file()
    stamp = (first / "model_index.json").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a cached checkpoint")

    monkeypatch.setattr(tiny, "save_tiny_checkpoint", no_rebuild)
    assert tiny_checkpoint_path("audio", cache_dir=tmp_path) == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp
    leftovers = {p.name for p in tmp_path.iterdir()} - {first.name, f".{first.name}.lock"}
    assert not leftovers  # the temporary build folder was renamed into place


def test_tiny_checkpoint_path_replaces_incomplete_folder(tmp_path):
    target = tmp_path / f"tiny-speech-{tiny.TINY_VERSION}"
    target.mkdir()
    (target / "junk.txt").write_text("half-deleted by hand")
    assert tiny_checkpoint_path("speech", cache_dir=tmp_path) == target
    assert (target / "model_index.json").is_file() and not (target / "junk.txt").exists()


@pytest.mark.parametrize(
    "call",
    [
        lambda: build_tiny_pipeline("music"),
        lambda: save_tiny_checkpoint("music", Path("unused")),
        lambda: tiny_checkpoint_path("music", cache_dir=Path("unused")),
    ],
)
def test_unknown_family_names_the_valid_ones(call):
    with pytest.raises(ValueError, match="audio, speech"):
        call()
