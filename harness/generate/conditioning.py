"""Prompt conditioning (CLAP + T5/VITS encodings, projection, GPT-2 output), computed once per
(prompt, transcription, negative prompt) and reused across schedulers, steps and seeds.

Each prompt is encoded alone through diffusers' own ``encode_prompt``, so the cached tensors
are exactly those of a bare single-prompt pipeline call. Batches are assembled by padding the
second encoder's sequence with masked zeros, which the UNet's cross-attention mask ignores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.stages import ENCODE, ENCODE_CLAP_TEXT, ENCODE_LANGUAGE_MODEL, ENCODE_PROJECTION, ENCODE_T5, ENCODE_VITS
from harness.measure.trackers import NullTracker, Tracker, remove_hooks


@dataclass(frozen=True)
class Conditioning:
    """One prompt's encoder outputs; with guidance, row 0 is the negative and row 1 the prompt."""

    prompt_embeds: torch.Tensor  # (rows, L, D) second text encoder (T5 or VITS)
    attention_mask: torch.Tensor  # (rows, L)
    generated_prompt_embeds: torch.Tensor  # (rows, max_new_tokens, D_lm) GPT-2 output


@dataclass(frozen=True)
class ConditioningKey:
    """Everything that changes a prompt's conditioning for a given loaded pipeline."""

    prompt: str
    transcription: str | None
    negative_prompt: str
    guidance: bool
    max_new_tokens: int | None


def _hook_encoders(pipe, tracker: Tracker) -> list:
    clap = pipe.text_encoder
    second = pipe.text_encoder_2
    second_name = ENCODE_VITS if second.config.model_type == "vits" else ENCODE_T5
    second_module = getattr(second, "text_encoder", second) if second_name == ENCODE_VITS else second
    handles = tracker.hook_module(clap.text_model, ENCODE_CLAP_TEXT)
    handles += tracker.hook_module(clap.text_projection, ENCODE_CLAP_TEXT)
    handles += tracker.hook_module(second_module, second_name)
    handles += tracker.hook_module(pipe.projection_model, ENCODE_PROJECTION)
    handles += tracker.hook_module(pipe.language_model, ENCODE_LANGUAGE_MODEL)
    return handles


def encode(pipe, key: ConditioningKey, tracker: Tracker | None = None) -> Conditioning:
    """Encode one prompt with the pipeline's own encode_prompt (negative first when guided)."""
    tracker = tracker or NullTracker()
    handles = _hook_encoders(pipe, tracker)
    try:
        with tracker.stage(ENCODE):
            embeds, mask, generated = pipe.encode_prompt(
                prompt=[key.prompt],
                device=pipe._execution_device,
                num_waveforms_per_prompt=1,
                do_classifier_free_guidance=key.guidance,
                transcription=[key.transcription] if key.transcription is not None else None,
                negative_prompt=[key.negative_prompt] if key.negative_prompt else None,
                max_new_tokens=key.max_new_tokens,
            )
    finally:
        remove_hooks(handles)
    return Conditioning(embeds, mask, generated)


class ConditioningCache:
    """Conditioning per key for one loaded pipeline; ``hits``/``misses`` count reuse."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._store: dict[ConditioningKey, Conditioning] = {}
        self._owner: object | None = None
        self.hits = 0
        self.misses = 0

    def get(self, pipe, key: ConditioningKey, tracker: Tracker | None = None) -> tuple[Conditioning, bool]:
        """Return (conditioning, was_cached); entries are dropped when the pipeline changes."""
        if id(pipe) != self._owner:
            self._store.clear()
            self._owner = id(pipe)  # an id, not a reference: the cache must not keep a pipeline alive
        if self.enabled and key in self._store:
            self.hits += 1
            return self._store[key], True
        self.misses += 1
        cond = encode(pipe, key, tracker)
        if self.enabled:
            self._store[key] = cond
        return cond, False


def _pad(t: torch.Tensor, length: int) -> torch.Tensor:
    if t.shape[1] == length:
        return t
    pad_shape = (t.shape[0], length - t.shape[1], *t.shape[2:])
    return torch.cat([t, t.new_zeros(pad_shape)], dim=1)


def stack(conds: list[Conditioning], guidance: bool) -> Conditioning:
    """Batch conditionings in the pipeline's layout: all negatives, then all prompts."""
    length = max(c.prompt_embeds.shape[1] for c in conds)
    halves = [slice(0, 1), slice(1, 2)] if guidance else [slice(0, 1)]

    def gather(attr: str, pad: bool) -> torch.Tensor:
        parts = [getattr(c, attr)[h] for h in halves for c in conds]
        return torch.cat([_pad(p, length) if pad else p for p in parts])

    return Conditioning(
        gather("prompt_embeds", True), gather("attention_mask", True), gather("generated_prompt_embeds", False)
    )
