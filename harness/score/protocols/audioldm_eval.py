"""``audioldm-eval``: the AudioLDM 2 paper's metric set, as audioldm_eval 0.0.3 computes it.

| label | metric | embedder | audioldm_eval key |
|---|---|---|---|
| FD | fad | pann (audioldm-eval front end: 16-bit PCM, mean removed, padded to 2 s) | frechet_distance |
| FAD | fad | vggish (frames of all clips pooled, no PCA, no final ReLU, 16-bit PCM input) | frechet_audio_distance |
| KL | kl_softmax | pann logits, paired with each prompt's reference clip | kullback_leibler_divergence_softmax |
| KL_sig | kl_sigmoid | pann logits, paired | kullback_leibler_divergence_sigmoid |
| IS | inception_score | pann logits (10 splits, shuffle seed 2020) | inception_score_mean |
| CLAP | clap_score | clap (LAION-CLAP; not part of audioldm_eval) | - |

The paper's table reports FAD, KL (softmax) and CLAP; FD and IS are audioldm_eval's other
columns. Version 1; bump it whenever an entry or its options change.
"""

from harness.score.protocols import Protocol, ProtocolEntry

_PANN = {"frontend": "audioldm-eval"}
_VGGISH = {"frontend": "audioldm-eval", "pooling": "frames"}

PROTOCOL = Protocol(
    name="audioldm-eval",
    version="1",
    description="AudioLDM 2 paper metrics as audioldm_eval 0.0.3 computes them (+ CLAP score)",
    entries=(
        ProtocolEntry("FD", "fad", "pann", _PANN, "frechet_distance"),
        ProtocolEntry("FAD", "fad", "vggish", _VGGISH, "frechet_audio_distance"),
        ProtocolEntry("KL", "kl_softmax", "pann", _PANN, "kullback_leibler_divergence_softmax"),
        ProtocolEntry("KL_sig", "kl_sigmoid", "pann", _PANN, "kullback_leibler_divergence_sigmoid"),
        ProtocolEntry("IS", "inception_score", "pann", _PANN, "inception_score_mean"),
        ProtocolEntry("CLAP", "clap_score", "clap", {}, "clap_score"),
    ),
)
