"""The harness's KV-cached GPT-2 step against the uncached reference loop, and the upstream bug."""

from __future__ import annotations

import pytest
import torch
import transformers

from harness.generate.language_model import generate_language_model, patch_pipeline
from harness.testing.oracles import reference_generate_language_model


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=64, n_layer=3, n_head=4, vocab_size=100, n_positions=640, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2Model(config).eval()


def _inputs(batch=3, length=12, pad_rows=(0, 2)):
    torch.manual_seed(1)
    embeds = torch.randn(batch, length, 64)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in pad_rows:  # AudioLDM 2 pads in the middle (T5 part) and at the end
        mask[row, length // 2 : length // 2 + 3] = 0
        mask[row, -2:] = 0
    return embeds, mask


@pytest.mark.parametrize("max_new_tokens", [1, 8])
def test_cached_equals_reference_with_padding(gpt2, max_new_tokens):
    embeds, mask = _inputs()
    cached = generate_language_model(gpt2, embeds, mask, max_new_tokens)
    reference = reference_generate_language_model(gpt2, embeds, mask, max_new_tokens)
    assert cached.shape == (3, max_new_tokens, 64)
    assert (cached - reference).abs().max().item() <= 1e-5


def test_cached_equals_reference_speech_length(gpt2):
    embeds, mask = _inputs(batch=2, length=40, pad_rows=(0,))
    cached = generate_language_model(gpt2, embeds, mask, 512)
    reference = reference_generate_language_model(gpt2, embeds, mask, 512)
    assert cached.shape == (2, 512, 64)
    assert (cached - reference).abs().max().item() <= 1e-5


def test_mask_matters(gpt2):
    # Guards against a loop that ignores the attention mask: padding must change the output.
    embeds, mask = _inputs()
    masked = generate_language_model(gpt2, embeds, mask, 4)
    unmasked = generate_language_model(gpt2, embeds, torch.ones_like(mask), 4)
    assert (masked[0] - unmasked[0]).abs().max().item() > 1e-4
    assert (masked[1] - unmasked[1]).abs().max().item() <= 1e-5  # row 1 had no padding


def test_stock_pipeline_method_still_broken(tiny_audio_path):
    """If this starts failing, upstream fixed diffusers issue 12630: delete language_model.py."""
    from diffusers import AudioLDM2Pipeline

    pipe = AudioLDM2Pipeline.from_pretrained(tiny_audio_path)
    with pytest.raises(AttributeError):
        pipe("a dog barks", num_inference_steps=2, audio_length_in_s=0.5)


def test_patched_pipeline_uses_config_default(tiny_audio_path):
    from diffusers import AudioLDM2Pipeline

    pipe = AudioLDM2Pipeline.from_pretrained(tiny_audio_path)
    patch_pipeline(pipe)
    embeds, mask = torch.randn(1, 5, pipe.language_model.config.n_embd), torch.ones(1, 5, dtype=torch.long)
    out = pipe.generate_language_model(embeds, attention_mask=mask, max_new_tokens=None)
    assert out.shape[1] == pipe.language_model.config.max_new_tokens
    ref = reference_generate_language_model(pipe.language_model, embeds, mask, out.shape[1])
    assert (out - ref).abs().max().item() <= 1e-5
