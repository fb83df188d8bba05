"""Embedding cache and the extraction driver that fills it.

Cache layout: ``<root>/<identity_key>/<sha[:2]>/<sha>.npy`` per audio clip (float32,
(n_windows, dim)) and ``<root>/<identity_key>/text/<sha[:2]>/<sha>.npy`` per text ((dim,)),
``<root>/<identity_key>/<output>/<sha[:2]>/<sha>.npy`` per extra output of a clip (e.g. PANN's
``logits``, (1, 527)),
where ``sha`` is the clip's content hash (``harness.score.embed.audio.content_sha256``: decoded
mono float samples + rate, never the path) or the sha256 of the UTF-8 text, and ``identity_key``
digests the embedder's identity (name, code version, weights checksum, preprocessing). So a
moved or renamed file hits, changed audio misses, and changed weights or settings miss.
``<root>/<identity_key>/identity.json`` records the full identity for people. An embedder that
``reads_channels`` (``openl3`` with ``channels=2``) files a multi-channel clip under the hash of
all its channels (``Embedder.cache_key``), so files with the same mono mix but different channels
never share an entry; a listed source's content hash cannot find that entry, so such a source is
decoded (unless it is listed as mono) and looked up under its channels hash.

The root is ``$AUDIOLDM2_HARNESS_CACHE/embeddings`` (default ``~/.cache/audioldm2-harness/
embeddings``) unless one is given (e.g. a folder inside the run). Files are written to a
temporary name and renamed, so concurrent scorers and crashes never leave half files; an
unreadable or mis-shaped file counts as a miss and is rewritten.

``embed_sources`` decodes each source at most once, resamples it at most once per rate, and
feeds every embedder that misses it, in batches of the embedder's ``batch_size``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.fileio import atomic_open, atomic_write_text
from harness.score.embed.audio import Clip
from harness.score.embed.registry import Embedder

__all__ = ["AudioSource", "EmbedResult", "EmbeddingCache", "default_embedding_cache_dir",
           "embed_sources", "embed_texts"]


def default_embedding_cache_dir() -> Path:
    """``$AUDIOLDM2_HARNESS_CACHE/embeddings``, else ``~/.cache/audioldm2-harness/embeddings``."""
    from harness.checkpoints._cache import default_cache_dir

    return default_cache_dir() / "embeddings"


class EmbeddingCache:
    """Content-keyed .npy store; counts hits, misses and writes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_embedding_cache_dir()
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self._noted: set[str] = set()

    def path(self, identity_key: str, key: str, kind: str = "audio") -> Path:
        """Where the embedding of ``key`` (content sha256) lives; ``kind``: audio, text or an extra output."""
        base = self.root / identity_key / ("" if kind == "audio" else kind)
        return base / key[:2] / f"{key}.npy"

    def get(self, embedder: Embedder, key: str, kind: str = "audio") -> np.ndarray | None:
        """The cached array, or None (absent, unreadable or of the wrong width)."""
        path = self.path(embedder.identity_key, key, kind)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            arr = None
        width = embedder.dim if kind in ("audio", "text") else embedder.output_dims().get(kind)
        if arr is not None and (arr.shape[-1] != width or not np.isfinite(arr).all()):
            arr = None  # written by something else under this key: recompute
        if arr is None:
            self.misses += 1
        else:
            self.hits += 1
        return arr

    def put(self, embedder: Embedder, key: str, value: np.ndarray, kind: str = "audio") -> None:
        """Store atomically (temporary file, then rename)."""
        path = self.path(embedder.identity_key, key, kind)
        self._note_identity(embedder)
        with atomic_open(path) as fh:
            np.save(fh, np.asarray(value, dtype=np.float32), allow_pickle=False)
        self.writes += 1

    def _note_identity(self, embedder: Embedder) -> None:
        if embedder.identity_key in self._noted:
            return
        target = self.root / embedder.identity_key / "identity.json"
        if not target.exists():
            atomic_write_text(target, json.dumps({"identity": embedder.identity(), "source": embedder.source()},
                                                 indent=2, sort_keys=True, default=str))
        self._noted.add(embedder.identity_key)


@dataclass
class AudioSource:
    """Something to embed: a loader, and its content hash when already known (skips decoding
    when every embedder hits the cache)."""

    label: str  # shown in errors, e.g. the file path
    load: Callable[[], Clip]
    key: str | None = None
    channels: int | None = None  # the file's channel count when listed (None: known once decoded)


@dataclass
class EmbedResult:
    """Per embedder (by name): one (n_windows, dim) array per source, None where it failed."""

    embeddings: dict[str, list[np.ndarray | None]]
    keys: list[str | None]  # content hash per source
    errors: dict[int, str]  # source index -> why it could not be embedded
    # embedder name -> extra output name (e.g. "logits") -> one array per source, None where it failed
    outputs: dict[str, dict[str, list[np.ndarray | None]]] = field(default_factory=dict)
    computed: Counter = field(default_factory=Counter)  # embedder name -> clips embedded now
    cached: Counter = field(default_factory=Counter)  # embedder name -> clips read from cache


def embed_sources(sources: Sequence[AudioSource], embedders: Sequence[Embedder],
                  cache: EmbeddingCache | None, *, chunk: int = 64, workers: int = 2,
                  progress: Callable[[int], None] | None = None) -> EmbedResult:
    """Embed every source with every embedder, using and filling ``cache`` (None: no cache).

    Sources are processed ``chunk`` at a time (bounding memory). While the embedders run on one
    chunk, ``workers`` threads decode and resample the next (decoding, hashing and soxr release
    the GIL), and one more thread writes the cache, so the model rarely waits for the disk
    (``workers=0``: everything inline, in order). Each source is decoded once if any embedder
    misses it, resampled once per needed rate, and the misses are embedded in batches. A source
    whose decoding fails, or whose content no longer matches its known ``key``, gets an entry in
    ``errors`` and None embeddings; the others are unaffected.
    """
    n = len(sources)
    result = EmbedResult({e.name: [None] * n for e in embedders}, [s.key for s in sources], {},
                         outputs={e.name: {o: [None] * n for o in e.output_dims()} for e in embedders})
    chunks = [range(start, min(start + chunk, n)) for start in range(0, n, chunk)]
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None
    writer = ThreadPoolExecutor(1, thread_name_prefix="cache-writer") if workers > 0 else None
    writes: list[Future] = []
    try:
        ahead = _Decoding(sources, embedders, cache, result, pool)
        if chunks:
            ahead.start(chunks[0])
        for k, part in enumerate(chunks):
            todo = ahead.finish()
            if k + 1 < len(chunks):
                ahead.start(chunks[k + 1])  # the next chunk decodes while this one embeds
            write = (lambda puts: writes.append(writer.submit(_write_cache, cache, puts))) if writer \
                else (lambda puts: _write_cache(cache, puts))
            _embed_chunk(todo, embedders, result, write)
            if progress is not None:
                progress(len(part))
        for future in writes:
            future.result()  # a failed cache write is an error here, not lost
    finally:
        for executor in (pool, writer):
            if executor is not None:
                executor.shutdown(wait=True)
    return result


class _Decoding:
    """One chunk in flight: cache look-ups on the calling thread, decoding and resampling on ``pool``."""

    def __init__(self, sources: Sequence[AudioSource], embedders: Sequence[Embedder],
                 cache: EmbeddingCache | None, result: EmbedResult, pool: ThreadPoolExecutor | None) -> None:
        self.sources, self.embedders, self.cache, self.result, self.pool = sources, embedders, cache, result, pool
        # (source index, embedders that miss so far, those of them not looked up yet)
        self.wanted: list[tuple[int, list[Embedder], list[Embedder]]] = []
        self.pending: list = []

    def start(self, part: range) -> None:
        """Look the chunk up in the cache and start decoding what misses."""
        self.wanted = []
        for i in part:
            src, missing, unlooked = self.sources[i], list(self.embedders), []
            if src.key is not None and self.cache is not None:
                # a file not listed as mono may be filed under its channels hash by an embedder
                # that reads channels: that key is known once it is decoded
                unlooked = [e for e in missing if e.reads_channels and src.channels != 1]
                early = [e for e in missing if e not in unlooked]
                missing = _lookup(self.cache, early, {e.name: src.key for e in early}, i, self.result) + unlooked
            elif self.cache is not None:
                unlooked = missing
            if missing:
                self.wanted.append((i, missing, unlooked))
        run = self.pool.submit if self.pool is not None else _now
        self.pending = [run(self._decode, i, missing) for i, missing, _ in self.wanted]

    def finish(self) -> dict[str, list[tuple[int, str, np.ndarray]]]:
        """(index, cache key, embedder input) per embedder and miss, in source order."""
        todo: dict[str, list[tuple[int, str, np.ndarray]]] = {e.name: [] for e in self.embedders}
        for (i, missing, unlooked), pending in zip(self.wanted, self.pending):
            key, audio, keys = pending.result()
            if key is None:
                self.result.errors[i] = audio
                continue
            self.result.keys[i] = key
            if unlooked:  # their keys are known only now: look them up
                found_missing = _lookup(self.cache, unlooked, keys, i, self.result)
                missing = [e for e in missing if e not in unlooked or e in found_missing]
            for e in missing:
                todo[e.name].append((i, keys[e.name], audio[e.name]))
        return todo

    def _decode(self, i: int, missing: list[Embedder]) -> tuple[str | None, dict[str, np.ndarray] | str,
                                                                 dict[str, str]]:
        """(content hash, embedder inputs, cache keys), by embedder name; (None, why, {}) on failure."""
        src = self.sources[i]
        try:
            clip = src.load()
        except Exception as err:  # noqa: BLE001 - reported per source, never dropped silently
            return None, f"cannot decode {src.label}: {type(err).__name__}: {err}", {}
        if src.key is not None and clip.sha256 != src.key:
            return None, f"{src.label} changed since it was listed (content hash differs)", {}
        if clip.samples.size == 0 or not np.isfinite(clip.samples).all():
            return None, f"{src.label} is empty or has non-finite samples", {}
        return clip.sha256, {e.name: e.audio_of(clip) for e in missing}, {e.name: e.cache_key(clip) for e in missing}


class _now:
    """A finished call with Future's ``result()``: the inline path of ``_Decoding``."""

    def __init__(self, fn: Callable, *args) -> None:
        self._value = fn(*args)

    def result(self):
        return self._value


def _embed_chunk(todo: dict[str, list[tuple[int, str, np.ndarray]]], embedders: Sequence[Embedder],
                 result: EmbedResult, write: Callable[[list], None]) -> None:
    """Run each embedder over its misses in batches; hand the new entries to ``write``."""
    for e in embedders:
        items = todo[e.name]
        for b in range(0, len(items), e.batch_size):
            batch = items[b:b + e.batch_size]
            outs, extras = e.embed_audio_outputs([audio for _, _, audio in batch])
            puts = []
            for j, ((i, key, _), arr) in enumerate(zip(batch, outs)):
                arr = np.asarray(arr, dtype=np.float32)
                result.embeddings[e.name][i] = arr
                result.computed[e.name] += 1
                puts.append((e, key, arr, "audio"))
                for output, arrays in extras.items():
                    result.outputs[e.name][output][i] = np.asarray(arrays[j], dtype=np.float32)
                    puts.append((e, key, arrays[j], output))
            write(puts)


def _write_cache(cache: EmbeddingCache | None, puts: list) -> None:
    if cache is not None:
        for embedder, key, value, kind in puts:
            cache.put(embedder, key, value, kind=kind)


def _lookup(cache: EmbeddingCache, embedders: list[Embedder], keys: dict[str, str], i: int,
            result: EmbedResult) -> list[Embedder]:
    """Fill ``result`` from ``cache`` (``keys``: cache key by embedder name); the embedders that miss."""
    missing = []
    for e in embedders:
        arr = cache.get(e, keys[e.name])
        extras = {o: cache.get(e, keys[e.name], kind=o) for o in e.output_dims()} if arr is not None else {}
        if arr is None or any(v is None for v in extras.values()):
            missing.append(e)  # every output is recomputed together
        else:
            result.embeddings[e.name][i] = arr
            for o, v in extras.items():
                result.outputs[e.name][o][i] = v
            result.cached[e.name] += 1
    return missing


def text_key(text: str) -> str:
    """sha256 of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def embed_texts(texts: Sequence[str], embedder: Embedder, cache: EmbeddingCache | None,
                counts: EmbedResult | None = None) -> np.ndarray:
    """(len(texts), dim) text embeddings; each distinct text is embedded once (or read from cache)."""
    unique = list(dict.fromkeys(texts))
    found: dict[str, np.ndarray] = {}
    if cache is not None:
        for t in unique:
            arr = cache.get(embedder, text_key(t), kind="text")
            if arr is not None:
                found[t] = arr.reshape(-1)
                if counts is not None:
                    counts.cached[f"{embedder.name}/text"] += 1
    todo = [t for t in unique if t not in found]
    if todo:
        rows = embedder.embed_text(todo)
        for t, row in zip(todo, rows):
            found[t] = np.asarray(row, dtype=np.float32)
            if cache is not None:
                cache.put(embedder, text_key(t), found[t], kind="text")
            if counts is not None:
                counts.computed[f"{embedder.name}/text"] += 1
    return np.stack([found[t] for t in texts]) if texts else np.zeros((0, embedder.dim), np.float32)
