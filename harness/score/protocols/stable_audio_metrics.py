"""``stable-audio-metrics``: Stable Audio Open's evaluation (AudioCaps settings), as
Stability-AI's stable-audio-metrics ``src/`` computes it.

| label | metric | embedder | stable-audio-metrics |
|---|---|---|---|
| FD_openl3 | fad | openl3 (mel256, env, 512-d per channel, stereo files left and right apart, mono faked to stereo: 1024-d frames at hop 0.5 s, 44.1 kHz bandwidth then 48 kHz; frames of all clips pooled) | openl3_fd |
| KL_passt | kl_passt | passt logits (32 kHz, 10 s windows at 5 s hop, averaged per clip, softmax), paired | passt_kld |
| CLAP | clap_score | clap (630k-audioset-fusion, clips peak-normalised to -1 dBFS) | clap_score |

Version 1; bump it whenever an entry or its options change.
"""

from harness.score.metrics.stable_audio import VARIANTS
from harness.score.protocols import Protocol, ProtocolEntry


def stable_audio_protocol(dataset: str, name: str) -> Protocol:
    """The protocol with ``VARIANTS[dataset]``'s settings (AudioCaps: env content; MusicCaps: music)."""
    variant = VARIANTS[dataset]
    return Protocol(
        name=name,
        version="1",
        description=f"Stable Audio Open's metrics as stable-audio-metrics computes them ({dataset} settings)",
        entries=(
            ProtocolEntry("FD_openl3", "fad", "openl3", dict(variant["openl3"]), "openl3_fd"),
            ProtocolEntry("KL_passt", "kl_passt", "passt", {}, "passt_kld"),
            ProtocolEntry("CLAP", "clap_score", "clap", {"peak_dbfs": variant["clap"]["peak_dbfs"]}, "clap_score"),
        ),
    )


PROTOCOL = stable_audio_protocol("audiocaps", "stable-audio-metrics")
