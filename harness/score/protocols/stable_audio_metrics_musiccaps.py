"""``stable-audio-metrics-musiccaps``: stable-audio-metrics with its MusicCaps settings (OpenL3's
music content type); otherwise as ``stable-audio-metrics``. Version 1."""

from harness.score.protocols.stable_audio_metrics import stable_audio_protocol

PROTOCOL = stable_audio_protocol("musiccaps", "stable-audio-metrics-musiccaps")
