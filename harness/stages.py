"""The stages of one AudioLDM 2 pipeline call: the one place their names are spelled.

Top-level stages are disjoint and tile the call; sub-stages nest under them with ``/``.
Trackers, stored timings and measurements, reports and gates all use these names.
"""

from __future__ import annotations

TOTAL = "total"

ENCODE = "encode"
ENCODE_CLAP_TEXT = "encode/clap_text"
ENCODE_T5 = "encode/t5"
ENCODE_VITS = "encode/vits"
ENCODE_PROJECTION = "encode/projection"
ENCODE_LANGUAGE_MODEL = "encode/language_model"
DENOISE = "denoise"
DENOISE_STEP = "denoise/step"
VAE_DECODE = "vae_decode"
VOCODER = "vocoder"
RERANK = "rerank"  # the pipeline's own CLAP re-ranking: the harness never runs it, reports show it if stored

STAGES = (ENCODE, DENOISE, VAE_DECODE, VOCODER, RERANK)
"""Top-level stages in call order."""

GENERATION_STAGES = (ENCODE, DENOISE, VAE_DECODE, VOCODER)
"""The top-level stages every harness call has (tables print these)."""
