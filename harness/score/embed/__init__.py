"""Audio (and text) embedders for the scoring stage, their registry and a content-hash cache.

* ``registry``: ``Embedder`` base class, ``register``, ``get_embedder(name, **options)``,
  ``available()``. Embedders: ``mel`` (weight-free log-mel statistics), ``clap``
  (transformers ``ClapModel``, default laion/clap-htsat-fused), ``tiny-clap`` (random weights,
  built offline, for tests).
* ``audio``: decoding to mono float32, content hashes, soxr resampling (once per rate per clip).
* ``cache``: embeddings stored as .npy files keyed by (audio content sha256, embedder identity),
  and ``embed_sources``, which feeds one decode/resample pass to several embedders.

Nothing here knows about the run store; ``harness.score.scoring`` wires it to runs and metrics.

Not provided: PANN (CNN14) and VGGish embedders. Their model definitions would come from
frechet-audio-distance, which pins numpy<2 and cannot be installed beside this stack, and their
weights cannot be fetched here; rather than register embedders that could never run or be
tested, they are left out. Adding one is adding a module here that registers its class.
"""

from harness.score.embed.registry import Embedder, EmbedderError, available, get_embedder, register

__all__ = ["Embedder", "EmbedderError", "available", "get_embedder", "register"]
