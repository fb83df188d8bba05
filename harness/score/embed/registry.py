"""The embedder registry: a name -> class table that every embedder file fills in itself.

Adding an embedder is adding a module to ``harness/score/embed/`` that defines a subclass of
``Embedder`` decorated with ``@register``; ``available()`` and ``get_embedder()`` import every
module of the package (except the infrastructure modules below) the first time they are called,
so nothing else has to be edited.

An embedder turns mono float32 audio at its own ``sample_rate`` into one (n_windows, dim)
float32 array per clip (its windowing rule is documented on the class), and optionally text
into (n, dim) rows; one that ``reads_channels`` (``openl3`` with ``channels=2``) takes a
multi-channel file's channels from ``audio_of`` and keys it by them (``cache_key``).
``identity()`` is everything that changes its output: name, code version, a sha256 of its
weights, and its preprocessing settings. The embedding cache is keyed by it and
every metric row stores it, so numbers from different weights or settings never mix.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import numpy as np

from harness.errors import HarnessError
from harness.plugins import add, import_modules

__all__ = ["Embedder", "EmbedderError", "available", "describe_all", "get_embedder", "options_of", "register"]

# Modules of this package that define no embedder.
_INFRASTRUCTURE = {"registry", "cache", "audio"}

_REGISTRY: dict[str, type[Embedder]] = {}
_discovered = False


class EmbedderError(HarnessError, ValueError):
    """An embedder cannot be built or used as asked; the message says why and what to do."""


class Embedder(ABC):
    """Base class: class attributes name the embedder, instances hold settings and (lazily) weights.

    Subclasses set ``name`` (registry key), ``description`` and ``version`` (bump it when the
    computation changes, so cached embeddings of the old code are not reused), and provide
    ``sample_rate``, ``window_s``, ``hop_s``, ``dim``, ``weights_sha256()``, ``preprocessing()``
    and ``embed_audio()``; text-capable ones set ``supports_text`` and implement ``embed_text()``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    supports_text: ClassVar[bool] = False

    sample_rate: int
    window_s: float
    hop_s: float
    batch_size: int = 16  # clips (or windows, see the class) per forward pass
    # How set metrics (FAD, KAD) turn a clip's window rows into set rows: "clip-mean" (one row
    # per clip) or "frames" (every window row of every clip, as frechet-audio-distance pools
    # VGGish). Embedders whose pooling can change record it in ``preprocessing()``.
    pooling: str = "clip-mean"

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of one embedding row."""

    @abstractmethod
    def weights_sha256(self) -> str:
        """sha256 of the weights (of the files or of the state dict bytes; of the fixed
        filterbank for weight-free embedders)."""

    @abstractmethod
    def preprocessing(self) -> dict[str, Any]:
        """JSON-able settings that change the embeddings (rates, windowing, feature extraction)."""

    @abstractmethod
    def embed_audio(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed mono float32 clips at ``sample_rate``: one (n_windows, dim) float32 array each."""

    def output_dims(self) -> dict[str, int]:
        """Extra per-clip outputs beside the embedding (e.g. PANN's ``logits``): name -> width."""
        return {}

    def embed_audio_outputs(self, clips: Sequence[np.ndarray]) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]]]:
        """The embeddings and every extra output of ``clips`` (one (n_windows, width) array per clip each)."""
        return self.embed_audio(clips), {}

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts: (n, dim) float32. Only for embedders with ``supports_text``."""
        raise EmbedderError(f"embedder {self.name!r} has no text encoder")

    def source(self) -> dict[str, Any]:
        """Where the weights came from (hub id, folder, revision); informative, not in the key."""
        return {}

    def audio_of(self, clip: Any) -> np.ndarray:
        """The samples this embedder takes from a decoded ``Clip``: by default the clip at ``sample_rate``."""
        return clip.at_rate(self.sample_rate)

    @property
    def reads_channels(self) -> bool:
        """Whether a multi-channel clip's embedding depends on more than its mono mix (see ``cache_key``)."""
        return False

    def cache_key(self, clip: Any) -> str:
        """The cache key of a decoded ``Clip``'s embedding: its content hash (of the mono mix) by default.

        An embedder that ``reads_channels`` keys a multi-channel clip by all its channels instead,
        so two files with the same mix but different channels never share an entry; a mono clip
        keeps its content hash (the key of every entry written before channels were read).
        """
        return clip.channels_sha256 if self.reads_channels and clip.n_channels > 1 else clip.sha256

    def identity(self) -> dict[str, Any]:
        """Name, code version, weights checksum and preprocessing: what the cache key hashes."""
        return {
            "name": self.name,
            "version": self.version,
            "weights_sha256": self.weights_sha256(),
            "dim": self.dim,
            "preprocessing": {
                "sample_rate": self.sample_rate,
                "window_s": self.window_s,
                "hop_s": self.hop_s,
                **self.preprocessing(),
            },
        }

    @cached_property
    def identity_key(self) -> str:
        """``<name>-<16 hex digits>``: a short, file-name-safe digest of ``identity()``."""
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


E = TypeVar("E", bound=type[Embedder])


def register(cls: E) -> E:
    """Class decorator: add an ``Embedder`` subclass to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Embedder)):
        raise TypeError(f"{cls!r} is not an Embedder subclass")
    add(_REGISTRY, cls, "embedder")
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import_modules("harness.score.embed", _INFRASTRUCTURE)
    _discovered = True


def available() -> list[str]:
    """Registered embedder names, sorted."""
    _discover()
    return sorted(_REGISTRY)


def describe_all() -> dict[str, str]:
    """name -> one-line description, for help texts and listings."""
    _discover()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def options_of(name: str) -> list[str]:
    """Constructor options (keyword names) the embedder registered as ``name`` accepts."""
    _discover()
    if name not in _REGISTRY:
        raise EmbedderError(f"unknown embedder {name!r}; valid: {', '.join(available())}")
    return [p for p in inspect.signature(_REGISTRY[name].__init__).parameters if p != "self"]


def get_embedder(name: str, **options: Any) -> Embedder:
    """Build the embedder registered as ``name`` with ``options`` (its constructor's keywords)."""
    _discover()
    cls = _REGISTRY.get(name.strip())
    if cls is None:
        raise EmbedderError(f"unknown embedder {name!r}; valid: {', '.join(available())}")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(params) - {"self"})
    if unknown:
        accepted = ", ".join(p for p in params if p != "self") or "none"
        raise EmbedderError(f"embedder {name!r} has no option(s) {', '.join(unknown)}; accepted: {accepted}")
    return cls(**options)
