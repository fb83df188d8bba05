"""Audio (and text) embedders for the scoring stage, their registry and a content-hash cache.

* ``registry``: ``Embedder`` base class, ``register``, ``get_embedder(name, **options)``,
  ``available()``. Embedders: ``mel`` (weight-free log-mel statistics), ``clap`` (LAION CLAP
  as laion_clap 1.1.7 computes it; transformers ``ClapModel``, default laion/clap-htsat-fused),
  ``clap-window`` (the earlier window-average CLAP rule), ``pann``, ``vggish``, and ``tiny-*``
  variants (random weights, built offline, for tests).
* ``audio``: decoding to mono float32, content hashes, soxr resampling (once per rate per clip).
* ``cache``: embeddings stored as .npy files keyed by (audio content sha256, embedder identity),
  and ``embed_sources``, which feeds one decode/resample pass to several embedders.

Nothing here knows about the run store; ``harness.score.scoring`` wires it to runs and metrics.
"""

from harness.score.embed.registry import Embedder, EmbedderError, available, get_embedder, register

__all__ = ["Embedder", "EmbedderError", "available", "get_embedder", "register"]
