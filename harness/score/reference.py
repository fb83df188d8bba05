"""The one reference abstraction of scoring: a folder, a paired folder, or a baseline cell.

``resolve_reference`` turns the ``--reference`` argument (and ``--pair-by``) into a
``Reference``: its label (``folder:<path>`` or ``cell:<id>``), its identity (the hash of its
audio content; for paired metrics also of the pairing), the ``details.reference`` entry of the
rows, the audio sources to embed, and ``metric_data`` to cut one cell's ``MetricData`` out of
the embeddings. A folder's manifest, quarantine and pairing report land in
``<run>/scores/reference-<id>.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.pairing import Pairing, pair_reference
from harness.data.references import DEFAULT_MIN_DURATION_S, ReferenceSet, ingest_reference_folder
from harness.score.embed.audio import Clip
from harness.score.embed.cache import AudioSource
from harness.score.metrics.registry import MetricData

__all__ = ["Reference", "clip_loader", "resolve_cell", "resolve_reference"]


def ReferenceError(message: str) -> Exception:  # noqa: N802 - reads as the exception it builds
    """A ``ScoreError`` (imported late: scoring imports this module)."""
    from harness.score.scoring import ScoreError

    return ScoreError(message)


def clip_loader(path: Path) -> Callable[[], Clip]:
    """A loader that decodes ``path`` when called (sources are decoded only on cache misses)."""
    return lambda: Clip.from_file(path)


def resolve_cell(prefix: str, cell_ids: Sequence[str]) -> str:
    """The one cell id starting with ``prefix``, or an error naming the candidates."""
    matches = [c for c in cell_ids if c.startswith(prefix)]
    if len(matches) != 1:
        what = "no cell of this run matches" if not matches else f"{len(matches)} cells of this run match"
        raise ReferenceError(f"{what} {prefix!r}; cells: {', '.join(sorted(cell_ids)) or 'none'}")
    return matches[0]


@dataclass
class Reference:
    """A resolved reference; ``source_index`` are its clips' positions among the embedded sources."""

    kind: str  # "folder" or "cell"
    label: str
    info: dict[str, Any]
    reference_set: ReferenceSet | None = None
    cell_id: str | None = None
    pairing: Pairing | None = None
    report_path: Path | None = None
    source_index: list[int] = field(default_factory=list)
    identity: str = ""
    paired_identity: str = ""

    @property
    def paired(self) -> bool:
        """Whether samples can be paired with reference clips (a paired folder or a cell)."""
        return self.pairing is not None or self.kind == "cell"

    def add_sources(self, sources: list[AudioSource]) -> None:
        """Append a folder's clips to ``sources`` (a cell's samples are added with the cells)."""
        if self.reference_set is None:
            return
        root = self.reference_set.root
        for e in self.reference_set.entries:
            self.source_index.append(len(sources))
            sources.append(AudioSource(str(root / e.path), clip_loader(root / e.path), e.audio_sha256, e.channels))

    def finish(self, keys: list[str | None], errors: dict[int, str], cell_rows: list[dict] | None = None) -> None:
        """Fix the identity once the clips are embedded; a folder clip that failed is an error."""
        if self.kind == "folder":
            bad = [errors[i] for i in self.source_index if i in errors]
            if bad:
                raise ReferenceError(f"reference clips failed to embed: {bad[0]}" +
                                     (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
            self.identity = self.reference_set.identity
            self.paired_identity = self.pairing.identity(self.reference_set) if self.pairing else self.identity
        else:
            self.identity = hashlib.sha256("\n".join(sorted(keys[i] for i in self.source_index if keys[i])).encode()).hexdigest()
            self.paired_identity = self.identity

    def metric_data(self, rows: list[dict], x: dict[str, list], outputs: dict[str, list],
                    cell_rows: list[dict] | None, pooling: str, seed: int) -> tuple[MetricData, dict[str, Any]]:
        """The ``MetricData`` of one cell (rows and their arrays ``x``) against this reference.

        ``outputs``: every source's arrays per output name; ``cell_rows``: the reference cell's ok
        rows (aligned with ``source_index``). Returns the data and row details about matching.
        """
        keys = [(r["prompt_id"], r["seed"]) for r in rows]
        prompts = [r["prompt_id"] for r in rows]
        if self.kind == "cell":  # only (prompt, seed) pairs both cells have, aligned
            base = {(r["prompt_id"], r["seed"]): i for r, i in zip(cell_rows, self.source_index)
                    if outputs["embedding"][i] is not None}
            keep = [k for k, key in enumerate(keys) if key in base]
            data = MetricData({o: [a[k] for k in keep] for o, a in x.items()}, [prompts[k] for k in keep],
                              [keys[k] for k in keep], pooling,
                              {o: [outputs[o][base[keys[k]]] for k in keep] for o in outputs}, aligned=True, seed=seed)
            return data, {"paired": True, "n_unmatched": len(rows) - len(keep)}
        y = {o: [outputs[o][i] for i in self.source_index] for o in outputs}
        pair = None
        if self.pairing is not None:
            pair = [self.pairing.matched.get(p) for p in prompts]
        return MetricData(x, prompts, keys, pooling, y, pair=pair, seed=seed), {"paired": False}


@dataclass(frozen=True)
class ReferenceOptions:
    """How a reference folder is read: shortest usable clip, pairing with prompts, external links."""

    min_duration_s: float = DEFAULT_MIN_DURATION_S
    pair_by: str | None = None
    follow_external_links: bool = False


def resolve_reference(reference: str, root: Path, by_cell: dict[str, list[dict]], wanted: list[str],
                      options: ReferenceOptions = ReferenceOptions()) -> Reference:
    """Resolve ``--reference`` (and ``--pair-by``) for the run at ``root``."""
    pair_by = options.pair_by
    known = list(by_cell)
    if reference.startswith("cell:"):
        if pair_by:
            raise ReferenceError("--pair-by applies to a reference folder; a cell: reference pairs by (prompt, seed)")
        cell = resolve_cell(reference[5:].strip(), known)
        ok = [r for r in by_cell[cell] if r["status"] == "ok"]
        if len(ok) < 2:
            raise ReferenceError(f"reference cell:{cell} has fewer than 2 ok samples")
        return Reference("cell", f"cell:{cell}", {"kind": "cell", "cell_id": cell, "n": len(ok),
                                                  "n_failed": len(by_cell[cell]) - len(ok)}, cell_id=cell)
    ref_set = ingest_reference_folder(reference, min_duration_s=options.min_duration_s,
                                      follow_external_links=options.follow_external_links)
    pairing = None
    extra = {}
    if pair_by:
        prompts = sorted({r["prompt_id"] for c in wanted for r in by_cell[c]})
        pairing = pair_reference(ref_set, prompts, pair_by)
        extra = {"pairing": pairing.to_json(ref_set)}
    report = root / "scores" / f"reference-{ref_set.identity[:12]}.json"
    report = ref_set.write(report, extra=extra)
    if len(ref_set.entries) < 2:
        raise ReferenceError(f"reference folder {reference} has {len(ref_set.entries)} usable clip(s) (FAD needs >= 2); "
                             f"{len(ref_set.quarantine)} quarantined, see {report}")
    if pairing is not None and not pairing.matched:
        raise ReferenceError(f"--pair-by {pair_by} paired no file of {reference} with a prompt of this run "
                             f"(e.g. {', '.join(pairing.unmatched_prompts[:3])}); see {report}")
    info = {"kind": "folder", "root": str(ref_set.root), "n": len(ref_set.entries),
            "n_quarantined": len(ref_set.quarantine), "manifest": report.relative_to(root).as_posix()}
    return Reference("folder", f"folder:{ref_set.root}", info, reference_set=ref_set, pairing=pairing,
                     report_path=report)


def empty_like(arrays: list[np.ndarray | None]) -> bool:
    """Whether every array is missing (None)."""
    return all(a is None for a in arrays)
