"""``tiny-whisper``: a Whisper model with random weights and an offline-trained tokenizer, built
locally (no download) so that transcription, caching and WER scoring can be tested anywhere.

It has the special tokens and generation config of a multilingual Whisper checkpoint (start of
transcript, ``<|en|>``, transcribe/translate, no-timestamps, no-speech), so it takes the same
code path as ``openai/whisper-large-v3``. Its transcripts are noise: only the plumbing is real.
"""

from __future__ import annotations

from pathlib import Path

from harness.checkpoints._cache import cached_folder

TINY_WHISPER = "tiny-whisper"
TINY_WHISPER_VERSION = "1"
# transformers' Whisper code finds timestamp tokens as the ids after <|notimestamps|>; it is the
# last special token here, as in the published vocabularies.
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
_CORPUS = (
    "The harbour lights came on one by one as the ferry left.",
    "Please close the door behind you, it is cold outside.",
    "The council approved the new budget on Monday morning.",
    "Hello there, this is a test of the speech recogniser.",
    "She sells sea shells by the sea shore in the summer.",
)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import WhisperTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    bpe.decoder = decoders.ByteLevel()
    vocab = bpe.get_vocab()
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in __import__("json").loads(bpe.to_str())["model"]["merges"]]
    tok = WhisperTokenizer(vocab=vocab, merges=merges, model_max_length=64)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    return tok


def _model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIALS}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500,  # 30 s of 10 ms frames after the stride-2 convolution
        max_target_positions=48, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=eot, pad_token_id=eot,
        bos_token_id=eot, max_length=48, is_multilingual=True, lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], begin_suppress_tokens=[eot], suppress_tokens=[],
    )
    return model


def save_tiny_whisper(folder: Path, seed: int = 0) -> None:
    """Write a tiny-whisper model, tokenizer and feature extractor (seeded random weights) to ``folder``."""
    from transformers import WhisperFeatureExtractor

    tokenizer = _tokenizer()
    _model(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    (folder / "model_index.json").write_text('{"_class_name": "tiny-whisper"}\n')  # the cache's complete marker


def tiny_whisper_path(cache_dir: Path | None = None) -> Path:
    """The cached tiny-whisper folder, built once."""
    return cached_folder(f"{TINY_WHISPER}-{TINY_WHISPER_VERSION}", save_tiny_whisper, cache_dir)
