"""Random-weight checkpoints with the published architectures (random_full.py).

Everything here runs on the meta device or on small stand-ins: no full-size weights are
allocated, except in the CUDA test at the end (skipped without a GPU).
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.checkpoints import random_full as rf
from harness.checkpoints.random_full import (
    LIKE,
    MODEL_COMPONENTS,
    PUBLISHED_SIZES,
    format_parameter_table,
    packaged_config,
    parameter_counts,
    random_checkpoint_path,
)
from conftest import require_espeak
from harness.checkpoints.registry import BUILTIN, PUBLISHED, CheckpointError, describe

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "harness" / "checkpoints" / "configs"
SPEECH = [like for like in LIKE if like.startswith("anhnct/")]
AUDIO = [like for like in LIKE if like.startswith("cvssp/")]

# Keys that describe how or where a file was written, not the architecture.
IGNORED_KEYS = {"_diffusers_version", "transformers_version", "_name_or_path", "torch_dtype", "dtype"}
# What the current libraries do to the published configs on load (the real hub checkpoints go
# through the same normalisation, so these are not differences between us and them):
LIBRARY_NORMALISED = {
    # T5EncoderModel switches its (encoder-only) config to is_encoder_decoder/use_cache False;
    # transformers 5's T5Config forces tie_word_embeddings=True and keeps the published False
    # as scale_decoder_outputs=False (checked separately below).
    "T5EncoderModel": {"is_encoder_decoder", "use_cache", "tie_word_embeddings"},
    # transformers renamed the HiFi-GAN vocoder's model_type "hifigan" -> "speecht5_hifigan".
    "SpeechT5HifiGan": {"model_type"},
}
# Tokenizer/feature-extractor keys that are call-time defaults or the processor link.
NOT_SAVED = {"max_length", "pad_to_multiple_of", "pad_token_type_id", "processor_class"}


def _differences(published: dict, saved: dict, ignore: set[str], path: str = "") -> list[str]:
    """Keys of ``published`` whose value ``saved`` lacks or changes (nested dicts recursively)."""
    out = []
    for key, value in published.items():
        if key in ignore:
            continue
        if key not in saved:
            out.append(f"{path}{key}: missing")
        elif isinstance(value, dict) and isinstance(saved[key], dict):
            out += _differences(value, saved[key], ignore, f"{path}{key}.")
        elif saved[key] != value:
            out.append(f"{path}{key}: published {value!r}, saved {saved[key]!r}")
    return out


@functools.cache
def _on_meta(like: str, component: str) -> torch.nn.Module:
    """The component on the meta device (shared between tests: do not modify it)."""
    with torch.device("meta"):
        return rf._construct(like, component)


@pytest.fixture(scope="module")
def tokenizers():
    """Both stand-in tokenizers per checkpoint (built once: ~0.5 s each)."""
    return {like: rf._tokenizers(like) for like in LIKE}


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("like", LIKE)
def test_parameter_counts_match_published_sizes(like):
    counts = parameter_counts(like)
    assert set(counts) == set(MODEL_COMPONENTS)
    published = PUBLISHED_SIZES[like]
    assert published, f"no published figure at all for {like}"
    ours = {**counts, "total": sum(counts.values())}
    for component, figure in published.items():
        # Within 1%, or within the rounding of figures given to 0.1M (projection: 1.2M).
        assert abs(ours[component] - figure) <= max(0.01 * figure, 50_000), component


def test_published_sizes_cover_what_the_hub_shows():
    # UNet sizes from the hub's weight files (fp32): 1.39 GB, 2.87 GB, 1.05 GB.
    assert PUBLISHED_SIZES["cvssp/audioldm2"]["unet"] * 4 == pytest.approx(1.39e9, rel=0.01)
    assert PUBLISHED_SIZES["cvssp/audioldm2-large"]["unet"] * 4 == pytest.approx(2.87e9, rel=0.01)
    assert PUBLISHED_SIZES["anhnct/audioldm2_ljspeech"]["unet"] * 4 == pytest.approx(1.05e9, rel=0.01)
    for like in AUDIO:
        assert set(PUBLISHED_SIZES[like]) >= set(MODEL_COMPONENTS)


def test_parameter_counts_allocate_nothing(monkeypatch):
    # Counting must stay on the meta device: a real allocation of a 100M+ parameter tensor
    # here would mean the full model was built.
    rf._counts.cache_clear()
    real_empty = torch.empty

    def guarded_empty(*size, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        numel = math.prod(int(s) for s in shape) if shape else 1
        device = kwargs.get("device")
        if numel > 10_000_000 and (device is None or torch.device(device).type != "meta"):
            if torch.get_default_device().type != "meta":
                raise AssertionError(f"allocated {numel} elements on {device}")
        return real_empty(*size, **kwargs)

    monkeypatch.setattr(torch, "empty", guarded_empty)
    assert parameter_counts("cvssp/audioldm2-large")["unet"] > 700_000_000


@pytest.mark.parametrize("like", LIKE)
def test_format_parameter_table(like):
    rows = format_parameter_table(like)
    assert [r[0] for r in rows] == [*MODEL_COMPONENTS, "total"]
    assert rows[-1][1] == sum(r[1] for r in rows[:-1])
    for component, ours, published in rows:
        assert isinstance(ours, int) and ours > 0
        assert published == PUBLISHED_SIZES[like].get(component)


# ---------------------------------------------------------------- configs and classes


@pytest.mark.parametrize("like", LIKE)
def test_component_configs_equal_the_packaged_json(like, tmp_path):
    for component in MODEL_COMPONENTS:
        model = _on_meta(like, component)
        folder = tmp_path / like.replace("/", "--") / component
        if hasattr(model, "save_config"):  # diffusers: what save_pretrained writes
            model.save_config(folder)
        else:
            model.config.save_pretrained(folder)
        saved = json.loads((folder / "config.json").read_text())
        ignore = IGNORED_KEYS | LIBRARY_NORMALISED.get(type(model).__name__, set())
        assert not _differences(packaged_config(like, component), saved, ignore), component
        if type(model).__name__ == "T5EncoderModel":
            assert saved["scale_decoder_outputs"] is False  # published tie_word_embeddings False


@pytest.mark.parametrize("like", LIKE)
def test_scheduler_and_feature_extractor_configs_equal_the_packaged_json(like, tmp_path):
    scheduler = rf._class_for(like, "scheduler").from_config(packaged_config(like, "scheduler"))
    assert not _differences(packaged_config(like, "scheduler"), dict(scheduler.config), IGNORED_KEYS)
    extractor = rf._class_for(like, "feature_extractor").from_dict(
        packaged_config(like, "feature_extractor")
    )
    extractor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    published = packaged_config(like, "feature_extractor")
    assert not _differences(published, saved, IGNORED_KEYS | NOT_SAVED)


@pytest.mark.parametrize("like", LIKE)
def test_component_classes_match_model_index(like, tokenizers):
    import transformers

    index = packaged_config(like, "model_index")
    assert index["_class_name"] == "AudioLDM2Pipeline"
    for component in MODEL_COMPONENTS:
        library, name = index[component]
        model = _on_meta(like, component)
        assert type(model).__name__ == name, component
        expected_root = {"transformers": "transformers", "diffusers": "diffusers",
                         "audioldm2": "diffusers"}
        assert type(model).__module__.split(".")[0] == expected_root[library], component
    for component, tokenizer in zip(("tokenizer", "tokenizer_2"), tokenizers[like]):
        assert isinstance(tokenizer, getattr(transformers, index[component][1])), component


def test_save_writes_the_published_model_index(tmp_path, monkeypatch):
    # The saving step, on a tiny pipeline so no full-size weights are built.
    from harness.checkpoints.tiny import build_tiny_pipeline

    monkeypatch.setattr(
        rf, "build_random_pipeline", lambda like, seed=0: build_tiny_pipeline("speech", seed)
    )
    like = "anhnct/audioldm2_ljspeech"
    rf.save_random_checkpoint(like, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "model_index.json").read_text())
    published = packaged_config(like, "model_index")
    assert {k: v for k, v in saved.items() if not k.startswith("_")} == {
        k: v for k, v in published.items() if not k.startswith("_")
    }


def test_packaged_files_are_listed_as_package_data():
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["harness"]
    included = {p for pattern in patterns for p in (REPO_ROOT / "harness").glob(pattern)}
    files = {p for p in CONFIGS.rglob("*") if p.is_file()}
    assert files and files <= included
    assert (CONFIGS / "README.md") in files
    for like in LIKE:
        folder = CONFIGS / like.replace("/", "--")
        for relative in [*rf.CONFIG_FILES.values(), "model_index.json", "SOURCES.md"]:
            assert (folder / relative).is_file(), f"{folder.name}/{relative}"


def test_the_package_never_reads_the_shared_folder():
    source = (REPO_ROOT / "harness" / "checkpoints" / "random_full.py").read_text()
    assert "checkpoint-configs" not in source and "/work/" not in source


# ---------------------------------------------------------------- how the components fit


@pytest.mark.parametrize("like", LIKE)
def test_components_are_wired_consistently(like):
    clap = packaged_config(like, "text_encoder")
    second = packaged_config(like, "text_encoder_2")
    gpt2 = packaged_config(like, "language_model")
    projection = packaged_config(like, "projection_model")
    unet = packaged_config(like, "unet")
    vae = packaged_config(like, "vae")
    second_dim = second["hidden_size"] if rf.is_speech(like) else second["d_model"]
    assert projection["text_encoder_dim"] == clap["projection_dim"]
    assert projection["text_encoder_1_dim"] == second_dim
    assert projection["langauge_model_dim"] == gpt2["n_embd"]
    # The UNet attends to GPT-2's output and (text-to-audio only) to T5's states directly.
    expected = {gpt2["n_embd"]} if rf.is_speech(like) else {gpt2["n_embd"], second_dim}
    for block in unet["cross_attention_dim"]:
        assert {d for d in block if d is not None} == expected
    assert unet["in_channels"] == unet["out_channels"] == vae["latent_channels"]
    assert packaged_config(like, "vocoder")["model_in_dim"] == 64  # mel bins the VAE decodes


@pytest.mark.parametrize("like", LIKE)
def test_tokenizers_fit_the_models(like, tokenizers):
    tokenizer, tokenizer_2 = tokenizers[like]
    clap_text = _on_meta(like, "text_encoder").config.text_config
    assert len(tokenizer) == clap_text.vocab_size == 50265
    assert tokenizer.model_max_length == packaged_config(like, "tokenizer")["model_max_length"] == 512
    assert tokenizer.model_max_length + 2 <= clap_text.max_position_embeddings  # RoBERTa offset
    assert tokenizer.mask_token_id == 50264 and tokenizer.pad_token_id == 1
    ids = tokenizer("A dog barks while cars pass by").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    if not rf.is_speech(like):
        t5 = packaged_config(like, "text_encoder_2")
        assert len(tokenizer_2) == 32100 <= t5["vocab_size"] == 32128
        special = (tokenizer_2.pad_token_id, tokenizer_2.eos_token_id, tokenizer_2.unk_token_id)
        assert special == (0, 1, 2)
        assert tokenizer_2.model_max_length == 128
        ids = tokenizer_2("A dog barks while cars pass by").input_ids
        assert ids[-1] == 1 and 2 not in ids


@pytest.mark.parametrize("like", SPEECH)
def test_speech_tokenizer_meets_the_pipeline_contract(like, tokenizers):
    vits_tok = tokenizers[like][1]
    vits = packaged_config(like, "text_encoder_2")
    projection = packaged_config(like, "projection_model")
    assert type(vits_tok).__name__ == "VitsTokenizer"
    # The pipeline writes id 182 at the first pad (id 0) of each transcription.
    assert len(vits_tok) >= 183 and vits["vocab_size"] >= 183
    assert len(vits_tok) <= vits["vocab_size"]
    assert vits_tok.pad_token_id == 0 and vits["pad_token_id"] == 0
    assert vits_tok.convert_ids_to_tokens(182) == "<eos>"
    assert not vits_tok.add_blank
    # The learned positional embedding is added to all max_length-padded positions.
    assert projection["use_learned_position_embedding"]
    assert vits_tok.model_max_length == projection["max_seq_length"] == 310
    assert vits["hidden_size"] == 192 and vits["num_hidden_layers"] == 6
    assert vits["num_attention_heads"] == 2 and vits["ffn_dim"] == 768
    # GPT-2 must fit the prefix (CLAP 1 + 2 special, VITS 310 + 2) plus 512 generated tokens.
    n_positions = packaged_config(like, "language_model")["n_positions"]
    max_new_tokens = BUILTIN[f"random:{like}"].max_new_tokens
    assert 1 + 2 + projection["max_seq_length"] + 2 + max_new_tokens <= n_positions


def test_speech_tokenizer_phonemizes_into_the_vocabulary(tokenizers):
    require_espeak()
    tok = tokenizers["anhnct/audioldm2_ljspeech"][1]
    ids = tok("hello world, this is a test.").input_ids
    assert ids and tok.unk_token_id not in ids  # espeak-ng's IPA output maps onto real ids


# ---------------------------------------------------------------- random initialisation


def _small_models():
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    t5 = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                  feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return {
        "t5": lambda: T5EncoderModel(t5),
        "vae": lambda: AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4,
            latent_channels=4,
            in_channels=1,
            out_channels=1,
        ),
    }


def _materialized(make, seed=0, dtype=torch.float32):
    with rf._parameters_on_meta():
        model = make()
    return rf._materialize(model, seed, dtype)


@pytest.mark.parametrize("name", ["t5", "vae"])
def test_materialize_is_seeded_real_and_eval(name):
    make = _small_models()[name]
    a, b, c = _materialized(make, 0), _materialized(make, 0), _materialized(make, 1)
    for model in (a, b, c):
        assert not any(p.is_meta for p in model.parameters())
        assert not any(t.is_meta for t in model.buffers())
        assert not model.training
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # Random tensors (not the constant norm weights and biases) change with the seed.
    random_keys = [k for k in sa if sa[k].is_floating_point() and sa[k].unique().numel() > 1]
    assert random_keys and all(not torch.equal(sa[k], sc[k]) for k in random_keys)
    for module in a.modules():
        if rf._is_norm(module):
            assert torch.all(module.weight == 1)
            assert getattr(module, "bias", None) is None or torch.all(module.bias == 0)
    assert all(torch.isfinite(p).all() for p in a.parameters())
    if name == "t5":  # tied embedding stays one tensor
        assert a.shared.weight is a.encoder.embed_tokens.weight


def test_materialize_in_half_precision_keeps_t5_feed_forward_fp32():
    model = _materialized(_small_models()["t5"], dtype=torch.float16)
    wo = model.encoder.block[0].layer[1].DenseReluDense.wo.weight
    wi = model.encoder.block[0].layer[1].DenseReluDense.wi_0.weight
    assert wo.dtype == torch.float32 and wi.dtype == torch.float16
    full = _materialized(_small_models()["t5"])
    full_wi = full.encoder.block[0].layer[1].DenseReluDense.wi_0.weight
    assert torch.equal(wi, full_wi.half())  # same values as in fp32, cast


def test_linear_weights_are_lecun_scaled():
    layer = _materialized(lambda: torch.nn.Linear(4096, 64))
    assert layer.weight.std().item() == pytest.approx(1 / 64, rel=0.05)
    assert torch.all(layer.bias == 0)
    embedding = _materialized(lambda: torch.nn.Embedding(1000, 64))
    assert embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_parameters_on_meta_restores_registration_after_an_error():
    original = torch.nn.Module.register_parameter
    with pytest.raises(RuntimeError):
        with rf._parameters_on_meta():
            raise RuntimeError("boom")
    assert torch.nn.Module.register_parameter is original
    assert not torch.nn.Linear(2, 2).weight.is_meta


def test_random_model_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    model = rf._random_model("cvssp/audioldm2", "projection_model", 0, torch.float32)
    assert torch.equal(torch.random.get_rng_state(), before)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == parameter_counts("cvssp/audioldm2")["projection_model"]


# ---------------------------------------------------------------- registry, cache, errors


@pytest.mark.parametrize("like", LIKE)
def test_registry_has_a_random_entry_per_published_checkpoint(like):
    info = describe(f"random:{like}")
    published = PUBLISHED[like]
    assert info.builtin and info.id == f"random:{like}"
    assert (info.task, info.needs_transcription, info.max_new_tokens) == (
        published.task, published.needs_transcription, published.max_new_tokens
    )


def test_locate_routes_random_names_to_the_cache(monkeypatch, tmp_path):
    from harness.generate import load

    calls = []
    monkeypatch.setattr(
        rf, "random_checkpoint_path", lambda like, cache_dir=None: calls.append(like) or tmp_path
    )
    assert load.locate("random:cvssp/audioldm2-music") == str(tmp_path)
    assert calls == ["cvssp/audioldm2-music"]


def test_random_checkpoint_path_builds_once_under_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    builds = []

    def fake_save(like, out_dir, seed=0):
        builds.append(like)
        Path(out_dir, "model_index.json").write_text("{}")
        return Path(out_dir)

    monkeypatch.setattr(rf, "save_random_checkpoint", fake_save)
    first = random_checkpoint_path("anhnct/audioldm2_gigaspeech")
    assert first == tmp_path / f"random-anhnct--audioldm2_gigaspeech-{rf.RANDOM_VERSION}"
    assert random_checkpoint_path("anhnct/audioldm2_gigaspeech", cache_dir=tmp_path) == first
    assert builds == ["anhnct/audioldm2_gigaspeech"]
    assert {p.name for p in tmp_path.iterdir()} == {first.name, f".{first.name}.lock"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: rf.build_random_pipeline("cvssp/audioldm"),
        lambda: parameter_counts("random:cvssp/audioldm2"),
        lambda: random_checkpoint_path("nope", cache_dir=Path("unused")),
        lambda: format_parameter_table("anhnct/audioldm2_libritts"),
    ],
)
def test_unknown_architecture_names_the_valid_ones(call):
    with pytest.raises(CheckpointError, match="cvssp/audioldm2-large"):
        call()


# ---------------------------------------------------------------- full size, GPU only


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("like", LIKE)
def test_full_size_checkpoint_builds_loads_and_runs_on_cuda(like, tmp_path, monkeypatch):
    from harness.generate.load import load_pipeline

    monkeypatch.setenv("AUDIOLDM2_HARNESS_CACHE", str(tmp_path))
    try:
        loaded = load_pipeline(f"random:{like}", None, "fp16", "cuda")
        pipe = loaded.pipe
        counts = {
            name: sum(p.numel() for p in pipe.components[name].parameters())
            for name in MODEL_COMPONENTS
        }
        assert counts == parameter_counts(like)
        info = loaded.info
        extra = {"transcription": "hello world, this is a test."} if info.needs_transcription else {}
        if info.max_new_tokens:
            extra["max_new_tokens"] = info.max_new_tokens
        with torch.inference_mode():
            audio = pipe(
                "A dog barks while cars pass by",
                num_inference_steps=2,
                audio_length_in_s=1.0,
                generator=torch.Generator("cuda").manual_seed(0),
                **extra,
            ).audios
        assert audio.shape == (1, 16000)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-4
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 3-6 GB per checkpoint
