"""Tiny AudioLDM 2 pipelines built fully offline, for tests and smoke sweeps.

Every component has the class the published checkpoints declare (GPT2Model as the language
model, ClapModel, T5EncoderModel or VitsModel, ...), shrunk to at most a few hundred thousand
parameters (2-3 MB on disk per checkpoint), so the real loading, scheduler and generation code
paths run in a fraction of a second on a CPU.
Tokenizers are trained here on a fixed corpus with the `tokenizers` library: no hub file is
read. Two families:

- "audio": text-to-audio like cvssp/audioldm2 (CLAP + T5 text encoders).
- "speech": text-to-speech like anhnct/audioldm2_ljspeech (CLAP + VITS text encoder; needs a
  ``transcription``; character vocabulary, no phonemizer).
"""

from __future__ import annotations

import json
import math
import string
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from harness.checkpoints._cache import cached_folder

if TYPE_CHECKING:
    from diffusers import AudioLDM2Pipeline

FAMILIES = ("audio", "speech")
TINY_VERSION = "1"

# Published model_index class names. transformers 5 aliases the *Fast tokenizer names to the
# base classes, so save_pretrained would write "RobertaTokenizer"/"T5Tokenizer"; the published
# names also load under transformers 4, where the base classes need sentencepiece/vocab files.
_PUBLISHED_TOKENIZER_CLASSES = {
    "audio": {"tokenizer": "RobertaTokenizerFast", "tokenizer_2": "T5TokenizerFast"},
    "speech": {"tokenizer": "RobertaTokenizerFast", "tokenizer_2": "VitsTokenizer"},
}

# Values of cvssp/audioldm2's scheduler/scheduler_config.json (identical in every published
# checkpoint), copied so the package never reads the shared config folder at run time.
_SCHEDULER_CONFIG = {
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

# The published feature extractor (laion/clap-htsat-unfused); config only, no weights.
_FEATURE_EXTRACTOR_CONFIG = {
    "chunk_length_s": 10,
    "feature_size": 64,
    "fft_window_size": 1024,
    "frequency_max": 14000,
    "frequency_min": 50,
    "hop_length": 480,
    "max_length_s": 10,
    "padding": "repeatpad",
    "padding_value": 0.0,
    "return_attention_mask": False,
    "sampling_rate": 48000,
    "top_db": None,
    "truncation": "rand_trunc",
}

# Sizes. Widths are shared where the pipeline wires one component's output into another.
_CLAP_DIM = 16  # CLAP projection_dim -> projection model text_encoder_dim
_T5_DIM = 32  # T5 d_model -> projection text_encoder_1_dim and UNet cross-attention
_VITS_DIM = 16  # VITS hidden_size -> projection text_encoder_1_dim
_GPT2_DIM = 32  # GPT-2 n_embd -> projection langauge_model_dim and UNet cross-attention
_MEL_BINS = 16  # vocoder model_in_dim; must be divisible by the VAE scale factor (4)
_LATENT_CHANNELS = 8  # as published
_ROBERTA_MAX_LEN = 64
_T5_MAX_LEN = 128
_VITS_MAX_LEN = 128  # = projection max_seq_length (learned positional embedding)
_VITS_END_ID = 182  # the pipeline writes this id at the first pad (id 0) of each transcription
_T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5 ids: pad 0, eos 1, unk 2

# Small fixed corpus: training on it is deterministic and needs no download.
_CORPUS = (
    "A dog barks while cars pass by on a busy street.",
    "Rain falls steadily on a tin roof as thunder rumbles in the distance.",
    "A man speaks over a crowd cheering at a sports game.",
    "Birds chirp and sing in a quiet forest at dawn.",
    "An engine revs up and a motorcycle speeds away.",
    "Water flows gently in a stream over smooth rocks.",
    "A woman laughs and a baby cries in the background.",
    "Church bells ring loudly while pigeons flap their wings.",
    "Techno music with a strong, upbeat tempo and high melodic riffs.",
    "A slow piano melody with soft strings and a warm bass line.",
    "Footsteps echo in a long empty hallway.",
    "The wind howls through the trees during a storm.",
    "A cat meows and purrs next to a ticking clock.",
    "Glass shatters and an alarm starts beeping.",
    "A train horn blows as the train rattles over the tracks.",
    "People talk and dishes clatter in a busy restaurant.",
    "An acoustic guitar plays a cheerful folk tune.",
    "Waves crash on the beach while seagulls call overhead.",
    "A helicopter flies overhead with loud spinning blades.",
    "Typing on a keyboard with occasional mouse clicks.",
    "The quick brown fox jumps over the lazy dog.",
    "She sells seashells by the seashore, and the shells she sells are surely seashells.",
    "Printing, in the only sense with which we are at present concerned, differs from most arts.",
    "It is a truth universally acknowledged that a single sound needs a good recording.",
    "Numbers like 1, 2, 3, 10 and 2024 appear in captions too!",
)

# Filler for the VITS vocabulary beyond plain characters: IPA symbols espeak-ng emits, so a
# phonemized transcription maps to real ids rather than <unk>.
_IPA = (
    "ᵻˈˌːəɪʊɛæɑɔʌɹʃʒθðŋɡɐɚɝɾʔɜɒɫçʝɣχʁħʕɦʋɭɳɲɰ"
    "ʎʟʙʀɸβɕʑɧʍɥʜʢʡɮɬɱɯɨʉɘɵɤɞɶøœɓɗʄɠʛʘǀǃǂǁ̩̯̃"
)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; valid: {', '.join(FAMILIES)}")


def _seeded(seed: int, offset: int, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    # One seed per component, so one component's weights do not depend on the build order,
    # and the caller's global RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + offset)
        return make().eval()


# ---------------------------------------------------------------- tokenizers


def _roberta_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tok, model_max_length=_ROBERTA_MAX_LEN)


def _unigram_vocab(size: int) -> list[tuple[str, float]]:
    # A one-pass frequency estimate (the seed step of Unigram training): tokenizers'
    # UnigramTrainer runs EM over hash maps and its scores differ in the last digits from one
    # process to the next, which would break byte-identical checkpoints.
    from tokenizers import pre_tokenizers

    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    counts: Counter[str] = Counter()
    for line in _CORPUS:
        for word, _ in pre.pre_tokenize_str(line):
            for start in range(len(word)):
                for end in range(start + 1, min(len(word), start + 8) + 1):
                    counts[word[start:end]] += 1
    chars = sorted(p for p in counts if len(p) == 1)  # every corpus character stays encodable
    longer = sorted((p for p in counts if len(p) > 1), key=lambda p: (-counts[p] * len(p), p))
    pieces = chars + longer[: size - len(_T5_SPECIALS) - len(chars)]
    total = sum(counts[p] for p in pieces)
    scored = [(p, round(math.log(counts[p] / total), 6)) for p in pieces]
    scored.sort(key=lambda item: (-item[1], item[0]))
    return [(s, 0.0) for s in _T5_SPECIALS] + scored


def _t5_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram(_unigram_vocab(200), unk_id=_T5_SPECIALS.index("<unk>")))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    # extra_ids=0: the sentinel tokens only matter for span-corruption pretraining.
    return T5TokenizerFast(tokenizer_object=tok, extra_ids=0, model_max_length=_T5_MAX_LEN)


def _vits_vocab() -> dict[str, int]:
    # Pad "_" must be id 0: the pipeline marks the end of the transcription by overwriting the
    # first id 0 with 182, so 182 must exist; it gets an explicit end symbol.
    chars = sorted({c for line in _CORPUS for c in line.lower()} | set(string.ascii_lowercase))
    symbols = list(dict.fromkeys(["_", "<unk>", *chars, *_IPA]))  # dedupe, keep order
    symbols += [f"<sym{i}>" for i in range(_VITS_END_ID - len(symbols))]
    symbols.append("<eos>")
    if symbols.index("<eos>") != _VITS_END_ID:
        raise RuntimeError(f"VITS vocabulary has more than {_VITS_END_ID} symbols before <eos>")
    return {s: i for i, s in enumerate(symbols)}


def _vits_tokenizer():
    return vits_tokenizer(_vits_vocab(), _VITS_MAX_LEN, phonemize=False)


def vits_tokenizer(vocab: dict[str, int], model_max_length: int, phonemize: bool):
    """A VitsTokenizer over ``vocab`` (no hub file): the tiny and the random full-size speech
    checkpoints differ only in vocabulary, length and whether text is phonemized first."""
    from transformers import VitsTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        # add_blank=False: interleaved blanks (id 0) would put the pipeline's end marker right
        # after the first symbol. normalize lowercases and drops characters outside the vocabulary.
        return VitsTokenizer(str(vocab_file), pad_token="_", unk_token="<unk>", add_blank=False,
                             normalize=True, phonemize=phonemize, model_max_length=model_max_length)


# ---------------------------------------------------------------- models


def _clap(vocab_size: int):
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig

    text = ClapTextConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=_ROBERTA_MAX_LEN + 2,  # RoBERTa positions start at pad_id + 1
        projection_dim=_CLAP_DIM,
    )
    # spec_size 256 x 64 mel bins is what the published 10 s feature extractor output needs
    # (1001 frames <= 256 * 4), so pipeline re-ranking runs; the Swin itself is tiny.
    audio = ClapAudioConfig(
        spec_size=256,
        num_mel_bins=64,
        window_size=8,
        patch_size=4,
        patch_stride=(4, 4),
        hidden_size=16,
        patch_embeds_hidden_size=8,
        depths=(1, 1),
        num_attention_heads=(1, 2),
        num_hidden_layers=2,
        projection_dim=_CLAP_DIM,
    )
    return ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=_CLAP_DIM))


def _t5(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=_T5_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",  # flan-t5, as in cvssp/audioldm2
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def _vits(vocab_size: int):
    from transformers import VitsConfig, VitsModel

    # The pipeline uses only VitsModel.text_encoder; the rest of VITS (flows, duration
    # predictor, posterior encoder, HiFi-GAN decoder) is shrunk to almost nothing.
    config = VitsConfig(
        vocab_size=vocab_size,
        hidden_size=_VITS_DIM,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=8,
        spectrogram_bins=9,
        upsample_initial_channel=8,
        upsample_rates=(4, 4),
        upsample_kernel_sizes=(8, 8),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        depth_separable_channels=2,
        depth_separable_num_layers=1,
        duration_predictor_filter_channels=8,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        pad_token_id=0,
    )
    return VitsModel(config)


def _gpt2():
    from transformers import GPT2Config, GPT2Model

    # The pipeline feeds inputs_embeds only, so the token vocabulary is vestigial; bos/eos
    # are kept inside it. max_new_tokens=8 is the published default read by the pipeline.
    config = GPT2Config(
        vocab_size=64,
        n_positions=1024,  # prefix + 512 new tokens for the speech setting
        n_embd=_GPT2_DIM,
        n_layer=2,
        n_head=2,
        bos_token_id=63,
        eos_token_id=63,
        max_new_tokens=8,
    )
    return GPT2Model(config)


def _projection(family: str):
    from diffusers.pipelines.audioldm2 import AudioLDM2ProjectionModel

    if family == "speech":
        return AudioLDM2ProjectionModel(
            text_encoder_dim=_CLAP_DIM,
            text_encoder_1_dim=_VITS_DIM,
            langauge_model_dim=_GPT2_DIM,
            use_learned_position_embedding=True,
            max_seq_length=_VITS_MAX_LEN,
        )
    return AudioLDM2ProjectionModel(
        text_encoder_dim=_CLAP_DIM, text_encoder_1_dim=_T5_DIM, langauge_model_dim=_GPT2_DIM
    )


def _unet(family: str):
    from diffusers.pipelines.audioldm2 import AudioLDM2UNet2DConditionModel

    # As published: self-attention-only transformer, then GPT-2 cross-attention, then (audio
    # family only) the second text encoder's cross-attention.
    per_block = [None, _GPT2_DIM] if family == "speech" else [None, _GPT2_DIM, _T5_DIM]
    return AudioLDM2UNet2DConditionModel(
        sample_size=32,  # default length 32 latent rows * 4 * 10 ms = 1.28 s
        in_channels=_LATENT_CHANNELS,
        out_channels=_LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=2,
        cross_attention_dim=(per_block, per_block),
    )


def _vae():
    from diffusers import AutoencoderKL

    # Three blocks give the published scale factor 4 (one mel frame = 10 ms, so lengths round
    # to 40 ms); scaling_factor is cvssp/audioldm2's.
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=_LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=128,
        scaling_factor=0.4110932946205139,
        force_upcast=True,
    )


def _vocoder():
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    # Upsampling 5*4*2*2*2 = 160 samples per mel frame at 16 kHz, as published; narrow channels.
    # initializer_range 0.2, not the published 0.01: every convolution in the chain scales the
    # signal, and at 0.01 the output is ~1e-10 (digital silence, which degenerate-output checks
    # flag); at 0.2 it peaks near 0.2 (-14 dBFS). The final tanh bounds it at 1 regardless.
    config = SpeechT5HifiGanConfig(
        initializer_range=0.2,
        model_in_dim=_MEL_BINS,
        sampling_rate=16000,
        upsample_initial_channel=32,
        upsample_rates=(5, 4, 2, 2, 2),
        upsample_kernel_sizes=(16, 16, 8, 4, 4),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        normalize_before=False,
    )
    return SpeechT5HifiGan(config)


# ---------------------------------------------------------------- public API


def build_tiny_pipeline(family: str = "audio", seed: int = 0) -> "AudioLDM2Pipeline":
    """Build a tiny AudioLDM2Pipeline of ``family`` in memory, every component in eval mode."""
    _check_family(family)
    from diffusers import AudioLDM2Pipeline, DDIMScheduler
    from transformers import ClapFeatureExtractor

    tokenizer = _roberta_tokenizer()
    if family == "speech":
        tokenizer_2 = _vits_tokenizer()
        text_encoder_2 = _seeded(seed, 2, lambda: _vits(len(tokenizer_2)))
    else:
        tokenizer_2 = _t5_tokenizer()
        text_encoder_2 = _seeded(seed, 2, lambda: _t5(len(tokenizer_2)))
    return AudioLDM2Pipeline(
        vae=_seeded(seed, 6, _vae),
        text_encoder=_seeded(seed, 1, lambda: _clap(len(tokenizer))),
        text_encoder_2=text_encoder_2,
        projection_model=_seeded(seed, 3, lambda: _projection(family)),
        language_model=_seeded(seed, 4, _gpt2),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        feature_extractor=ClapFeatureExtractor(**_FEATURE_EXTRACTOR_CONFIG),
        unet=_seeded(seed, 5, lambda: _unet(family)),
        scheduler=DDIMScheduler(**_SCHEDULER_CONFIG),
        vocoder=_seeded(seed, 7, _vocoder),
    )


def _write_published_tokenizer_names(family: str, folder: Path) -> None:
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for name, cls in _PUBLISHED_TOKENIZER_CLASSES[family].items():
        index[name] = ["transformers", cls]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_tiny_checkpoint(family: str, out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny ``family`` pipeline as a diffusers folder (safetensors); returns ``out_dir``."""
    _check_family(family)
    out_dir = Path(out_dir)
    pipe = build_tiny_pipeline(family, seed)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" bars per component
    try:
        pipe.save_pretrained(out_dir, safe_serialization=True)
    finally:
        transformers_logging.enable_progress_bar()
    _write_published_tokenizer_names(family, out_dir)
    return out_dir


def tiny_checkpoint_path(family: str, cache_dir: Path | None = None) -> Path:
    """Return the cached tiny ``family`` checkpoint folder (seed 0), building it once if absent."""
    _check_family(family)
    return cached_folder(
        f"tiny-{family}-{TINY_VERSION}",
        lambda tmp: save_tiny_checkpoint(family, tmp),
        cache_dir,
    )
