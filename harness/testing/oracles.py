"""Test oracles: independent, deliberately plain implementations that the tests and benchmarks
hold the harness's fast code against. Never used for a reported figure."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def sqrtm_frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """frechet-audio-distance's ``calculate_frechet_distance`` formula (scipy ``sqrtm`` of the
    non-symmetric product, imaginary part dropped): the reference for ``frechet_distance``. It can
    turn complex or negative on ill-conditioned input, which is why the harness does not use it."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def reference_generate_language_model(language_model, inputs_embeds, attention_mask=None, max_new_tokens: int = 8):
    """The uncached GPT-2 loop: re-runs the whole sequence at every step (slow), the reference for
    ``harness.generate.language_model.generate_language_model``'s KV-cached loop."""
    import torch

    with torch.no_grad():
        sequence, mask = inputs_embeds, attention_mask
        for _ in range(max_new_tokens):
            output = language_model(inputs_embeds=sequence, attention_mask=mask, use_cache=False)
            sequence = torch.cat([sequence, output.last_hidden_state[:, -1:, :]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        return sequence[:, -max_new_tokens:, :]
