"""The GPT-2 step of AudioLDM 2, run by the harness itself.

Why this file exists: every published AudioLDM 2 checkpoint declares its language model as
``GPT2Model``. diffusers' ``AudioLDM2Pipeline.generate_language_model`` calls GenerationMixin
helpers (``_get_initial_cache_position``, ``_update_model_kwargs_for_generation``) and reads
``output.hidden_states``, none of which ``GPT2Model`` has in current transformers, so the stock
pipeline raises AttributeError (diffusers issue 12630; fix PR 13111 was closed unmerged).

``generate_language_model`` is a KV-cached loop over ``GPT2Model`` that returns the same hidden
states as ``harness.testing.oracles.reference_generate_language_model``, the uncached loop that re-runs the whole
sequence at every step (the semantics of the original pipeline). ``patch_pipeline`` binds it to
a pipeline instance. When upstream is fixed, delete this file and the one call to
``patch_pipeline`` in ``harness/generate/load.py``.
"""

from __future__ import annotations

import inspect
import types

import torch

# transformers 5 renamed GPT-2's cache argument and output field from past_key_values to cache.
_CACHE_KW = "cache" if "cache" in inspect.signature(
    __import__("transformers").GPT2Model.forward
).parameters else "past_key_values"


def _cache_of(output) -> object:
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def _extend_mask(attention_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    ones = attention_mask.new_ones((batch, 1))
    return torch.cat([attention_mask, ones.to(device)], dim=1)


@torch.no_grad()
def generate_language_model(
    language_model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 8,
) -> torch.Tensor:
    """Generate ``max_new_tokens`` hidden states with a KV cache; returns (batch, max_new_tokens, hidden)."""
    batch = inputs_embeds.shape[0]
    step_input, mask, cache, new_states = inputs_embeds, attention_mask, None, []
    for _ in range(max_new_tokens):
        output = language_model(
            inputs_embeds=step_input, attention_mask=mask, use_cache=True, **{_CACHE_KW: cache}
        )
        step_input = output.last_hidden_state[:, -1:, :]
        new_states.append(step_input)
        cache = _cache_of(output)
        mask = _extend_mask(mask, batch, inputs_embeds.device)
    return torch.cat(new_states, dim=1)


def _pipeline_method(self, inputs_embeds=None, max_new_tokens=8, **model_kwargs):
    # Same signature as AudioLDM2Pipeline.generate_language_model, so encode_prompt calls it unchanged.
    if max_new_tokens is None:
        max_new_tokens = self.language_model.config.max_new_tokens
    return generate_language_model(
        self.language_model, inputs_embeds, model_kwargs.get("attention_mask"), max_new_tokens
    )


def patch_pipeline(pipe) -> None:
    """Replace ``pipe.generate_language_model`` with the KV-cached loop (this instance only)."""
    pipe.generate_language_model = types.MethodType(_pipeline_method, pipe)
