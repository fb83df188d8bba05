"""Static shards: ``run --shard i/N`` does a deterministic, cost-balanced part of a sweep.

The partition is computed from the sweep's *full* plan (every batch, whatever the store already
holds), so a shard resumed later, or re-run on another node of a job array, does exactly the
same batches. Whole batches are assigned, never single samples: batches are cut from the full
plan before partitioning, so every sample keeps its batch neighbours and its audio is
bit-identical to a single-process run's. ``audioldm2-harness merge`` joins the shard folders.

Shards are numbered 1..N (``--shard 1/4`` .. ``--shard 4/4``), as in a Slurm job array started
with ``--array=1-4``: ``--shard "$SLURM_ARRAY_TASK_ID/4"``.

Cost model (relative units, "UNet sample-seconds"): a batch costs
``steps x audio_length_s x samples in the batch x UNet passes per step``, where the passes are
the diffusers scheduler class's ``order`` (2 for heun, kdpm2, kdpm2-ancestral, dpmsolver-sde; 1
otherwise) times 2 with classifier-free guidance (guidance_scale > 1 runs the UNet on a doubled
batch). Text encoding and GPT-2 generation, which do not grow with steps, are not counted.

Assignment (greedy, longest first): batches in order of descending cost (ties: cell id, then the
batch's index in its cell) each go to the least-loaded shard (ties: lowest shard number), except
that a shard already holding batches of the same cell, or else of the same pipeline (checkpoint,
dtype, device, runtime options), is preferred while that keeps it within the ideal share
(total / N). A second candidate first places whole cells (largest first) wherever they fit the
ideal share, then splits the rest as above. The candidate with fewer pipeline loads, then cell
loads, wins unless its largest shard is more than 1 % above the other's; either way no shard
exceeds the ideal share by more than one batch. The result depends only on the plan and N.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from harness.spec import Cell
from harness.plan import Batch

SHARD_USAGE = "--shard must look like 2/4 with 1 <= i <= N"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.index, int) and isinstance(self.count, int) and 1 <= self.index <= self.count):
            raise ValueError(f"{SHARD_USAGE}, got {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def dirname(self) -> str:
        """Default folder name of this shard's store, inside runs/<sweep name>/."""
        return f"shard-{self.index}-of-{self.count}"


def parse_shard(text: str) -> Shard:
    """Parse ``"i/N"`` (1-based); anything else is a ValueError with the usage line."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"{SHARD_USAGE}, got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ValueError(f"{SHARD_USAGE}, got {text!r}")
    return Shard(index, count)


@functools.lru_cache(maxsize=None)
def _scheduler_order(scheduler_type: str) -> int:
    from harness.schedulers import scheduler_class

    try:
        return max(1, int(getattr(scheduler_class(scheduler_type), "order", 1)))
    except Exception:  # noqa: BLE001 - an unknown scheduler fails later, in its own cell
        return 1


def unet_passes(cell: Cell) -> int:
    """UNet evaluations per step per sample: scheduler order x 2 with classifier-free guidance."""
    return _scheduler_order(cell.scheduler_type) * (2 if cell.guidance_scale > 1.0 else 1)


def batch_cost(batch: Batch) -> float:
    """steps x audio seconds x samples x UNet passes per step (the whole batch is computed)."""
    cell = batch.cell
    return float(cell.steps * cell.audio_length_s * len(batch.items) * unet_passes(cell))


def plan_fingerprint(batches: Sequence[Batch], count: int | None = None) -> str:
    """Hash of the full plan (cells, batches, their samples) and N: equal plans, equal partitions."""
    payload = [[b.cell.id, [[i.prompt.id, i.seed] for i in b.items]] for b in batches]
    blob = json.dumps({"count": count, "plan": payload}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Partition:
    """Which shard (0-based) each batch of the full plan belongs to."""

    count: int
    batches: list[Batch]
    owner: list[int]
    costs: list[float]

    def loads(self) -> list[float]:
        """Total cost per shard (0-based list)."""
        loads = [0.0] * self.count
        for owner, cost in zip(self.owner, self.costs):
            loads[owner] += cost
        return loads

    def select(self, shard: Shard) -> list[Batch]:
        """The batches of ``shard``, in plan order (cells stay contiguous for the executor)."""
        if shard.count != self.count:
            raise ValueError(f"partition is into {self.count} shards, not {shard.count}")
        return [b for b, owner in zip(self.batches, self.owner) if owner == shard.index - 1]

    def summary(self) -> list[dict[str, Any]]:
        """Per shard: batches, samples, cost, share of the total, cells and pipelines touched."""
        total = sum(self.costs) or 1.0
        rows = []
        for s in range(self.count):
            mine = [(b, c) for b, c, o in zip(self.batches, self.costs, self.owner) if o == s]
            cost = sum(c for _, c in mine)
            rows.append({
                "shard": f"{s + 1}/{self.count}", "batches": len(mine),
                "samples": sum(len(b.items) for b, _ in mine), "cost": cost, "share": cost / total,
                "cells": len({b.cell.id for b, _ in mine}),
                "pipelines": len({b.cell.load_key for b, _ in mine}),
            })
        return rows

    def describe(self, shard: Shard) -> str:
        """One line about ``shard``'s part of the sweep."""
        row = self.summary()[shard.index - 1]
        loads = self.loads()
        spread = (max(loads) / (sum(loads) / self.count)) if sum(loads) else 1.0
        return (f"shard {shard}: {row['batches']} of {len(self.batches)} batches, {row['samples']} samples, "
                f"{row['cells']} cells, cost {row['cost']:g} of {sum(self.costs):g} "
                f"({100 * row['share']:.1f} %; largest shard = {spread:.2f} x the ideal share)")


def partition(batches: Sequence[Batch], count: int) -> Partition:
    """Assign every batch of the full plan to one of ``count`` shards (see the module docstring)."""
    if count < 1:
        raise ValueError(f"{SHARD_USAGE}, got N = {count}")
    batches = list(batches)
    costs = [batch_cost(b) for b in batches]
    index_in_cell, seen = [], {}
    for b in batches:
        index_in_cell.append(seen.get(b.cell.id, 0))
        seen[b.cell.id] = index_in_cell[-1] + 1
    target = sum(costs) / count
    tolerance = 1e-9 * max(target, 1.0)
    candidates = [
        _greedy(batches, costs, index_in_cell, count, target, tolerance, whole_cells_first=True),
        _greedy(batches, costs, index_in_cell, count, target, tolerance, whole_cells_first=False),
    ]
    peaks = [max(_loads(owner, costs, count), default=0.0) for owner in candidates]
    best = min(peaks)

    def rank(k: int) -> tuple:
        owner = candidates[k]
        cell_loads = len({(b.cell.id, o) for b, o in zip(batches, owner)})
        pipeline_loads = len({(b.cell.load_key, o) for b, o in zip(batches, owner)})
        return (peaks[k] > best * (1 + BALANCE_SLACK) + tolerance, pipeline_loads, cell_loads, peaks[k], k)

    return Partition(count, batches, candidates[min(range(len(candidates)), key=rank)], costs)


BALANCE_SLACK = 0.01  # keep cells whole if the largest shard grows by at most 1 % over the best split


def _loads(owner: list[int], costs: list[float], count: int) -> list[float]:
    loads = [0.0] * count
    for o, c in zip(owner, costs):
        loads[o] += c
    return loads


def _greedy(batches: list[Batch], costs: list[float], index_in_cell: list[int], count: int, target: float,
            tolerance: float, whole_cells_first: bool) -> list[int]:
    """Greedy by descending cost; optionally place whole cells first where they fit the ideal share."""
    loads = [0.0] * count
    cells: list[set[str]] = [set() for _ in range(count)]
    pipelines: list[set[tuple]] = [set() for _ in range(count)]
    owner = [-1] * len(batches)

    def put(k: int, shard: int) -> None:
        owner[k] = shard
        loads[shard] += costs[k]
        cells[shard].add(batches[k].cell.id)
        pipelines[shard].add(batches[k].cell.load_key)

    if whole_cells_first:
        members: dict[str, list[int]] = {}
        for k, b in enumerate(batches):
            members.setdefault(b.cell.id, []).append(k)
        cell_cost = {cid: sum(costs[k] for k in ks) for cid, ks in members.items()}
        for cid in sorted(members, key=lambda c: (-cell_cost[c], c)):
            load_key = batches[members[cid][0]].cell.load_key
            fitting = [s for s in range(count) if loads[s] + cell_cost[cid] <= target + tolerance]
            if fitting:
                shard = min(fitting, key=lambda s: (load_key not in pipelines[s], loads[s], s))
                for k in members[cid]:
                    put(k, shard)
    rest = [k for k in range(len(batches)) if owner[k] < 0]
    for k in sorted(rest, key=lambda k: (-costs[k], batches[k].cell.id, index_in_cell[k])):
        cell, cost = batches[k].cell, costs[k]
        chosen = None
        for holders in ([s for s in range(count) if cell.id in cells[s]],
                        [s for s in range(count) if cell.load_key in pipelines[s]]):
            fitting = [s for s in holders if loads[s] + cost <= target + tolerance]
            if fitting:
                chosen = min(fitting, key=lambda s: (loads[s], s))
                break
        if chosen is None:
            chosen = min(range(count), key=lambda s: (loads[s], s))
        put(k, chosen)
    return owner


def shard_meta(shard: Shard, part: Partition, batch_size: int) -> dict[str, Any]:
    """What a shard's store records about its part (checked on resume, reported by merge)."""
    row = part.summary()[shard.index - 1]
    return {"shard": str(shard), "index": shard.index, "count": shard.count, "batch_size": batch_size,
            "plan": plan_fingerprint(part.batches, shard.count), "batches": row["batches"],
            "samples": row["samples"], "cost": row["cost"], "total_cost": sum(part.costs)}


def check_shard_folder(stored: dict[str, Any] | None, has_samples: bool, shard: Shard | None,
                       batch_size: int, root: Any) -> None:
    """Refuse to mix shard specs (or batch sizes, which change the partition) in one folder."""
    from harness.store import StoreError

    if stored is None:
        if shard is not None and has_samples:
            raise StoreError(f"{root} holds an unsharded run; give shard {shard} its own --run-dir")
        return
    wanted = None if shard is None else str(shard)
    if wanted != stored.get("shard") or batch_size != stored.get("batch_size"):
        asked = f"shard {wanted}" if wanted else "an unsharded run"
        raise StoreError(
            f"{root} holds shard {stored.get('shard')} (batch size {stored.get('batch_size')}) but this run "
            f"asks for {asked} (batch size {batch_size}); use --shard {stored.get('shard')} "
            f"--batch-size {stored.get('batch_size')} to resume it, or another --run-dir"
        )
