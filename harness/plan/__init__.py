"""Planning: cells x prompts x seeds -> batches, minus what the store already holds; shards.

``plan`` expands the sweep into (cell, prompt, seed) work items and drops those the store
already holds, which is all that resuming needs. Batches are cut from the full plan, so a
resume or a shard recomputes a partly stored batch with the same neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from harness.checkpoints.registry import describe
from harness.data.prompts import Prompt, PromptSet
from harness.spec import Cell, ConfigError, SweepSpec

if TYPE_CHECKING:
    from harness.plan.shard import Shard


class WorkItem(NamedTuple):
    """One sample to make: a cell, a prompt and a seed (a tuple: plans hold a million of them)."""

    cell: Cell
    prompt: Prompt
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        """The sample's store key."""
        return (self.cell.id, self.prompt.id, self.seed)


@dataclass(frozen=True)
class Batch:
    """Items of one cell generated together; only ``todo`` ones are stored.

    Batches are cut from the full plan, not from what is left, so a resumed run recomputes a
    partly stored batch with the same neighbours and its audio is bit-identical to an
    uninterrupted run's.
    """

    cell: Cell
    items: tuple[WorkItem, ...]
    todo: tuple[bool, ...]


def prompts_for(checkpoint: str, prompts: PromptSet, limit: int | None) -> list[Prompt]:
    """The prompts a checkpoint runs: speech checkpoints take only prompts with a transcription."""
    chosen = list(prompts.prompts)
    if describe(checkpoint).needs_transcription:
        chosen = [p for p in chosen if p.transcription]
        if not chosen:
            raise ConfigError(
                f"checkpoint {checkpoint!r} needs a transcription, but prompt set {prompts.name!r} "
                "has no prompt with one; add 'transcription' to some prompts"
            )
    return chosen[:limit] if limit else chosen


def _pairs(spec: SweepSpec, prompts: PromptSet) -> dict[str, list[tuple[Prompt, int]]]:
    """Each checkpoint's (prompt, seed) pairs in plan order."""
    return {c.id: [(p, seed) for p in prompts_for(c.id, prompts, spec.prompts.limit) for seed in spec.seeds]
            for c in spec.checkpoints}


def cut_batches(spec: SweepSpec, cells: list[Cell], prompts: PromptSet, batch_size: int) -> list[Batch]:
    """The full plan, cut into batches whatever the store holds (so resumes and shards agree)."""
    per_checkpoint = _pairs(spec, prompts)
    batches = []
    for cell in cells:
        items = [WorkItem(cell, p, seed) for p, seed in per_checkpoint[cell.checkpoint]]
        for start in range(0, len(items), batch_size):
            chunk = tuple(items[start:start + batch_size])
            batches.append(Batch(cell, chunk, (True,) * len(chunk)))
    return batches


def plan(spec: SweepSpec, cells: list[Cell], prompts: PromptSet, done: set[tuple[str, str, int]],
         batch_size: int, shard: Shard | None = None) -> tuple[list[Batch], int, int]:
    """Batches holding work not yet in the store; also (samples to do, samples already stored).

    With ``shard``, only the batches the partition of the full plan gives that shard. Without,
    keys are compared as plain tuples and no item is built for a batch the store already holds,
    so resuming a fully stored sweep of a million samples takes seconds.
    """
    if shard is not None:
        from harness.plan.shard import partition

        return _unfinished(partition(cut_batches(spec, cells, prompts, batch_size), shard.count).select(shard), done)
    done_by_cell: dict[str, set[tuple[str, int]]] = {}
    for cell_id, prompt_id, seed in done:
        done_by_cell.setdefault(cell_id, set()).add((prompt_id, seed))
    per_checkpoint = _pairs(spec, prompts)
    keys = {ckpt: [(p.id, seed) for p, seed in pairs] for ckpt, pairs in per_checkpoint.items()}
    batches, todo_count, total = [], 0, 0
    for cell in cells:
        pairs, cell_keys, stored = per_checkpoint[cell.checkpoint], keys[cell.checkpoint], done_by_cell.get(cell.id, ())
        total += len(pairs)
        if stored and len(stored) >= len(cell_keys) and stored.issuperset(cell_keys):
            continue  # the whole cell is stored: one set operation instead of one lookup per sample
        for start in range(0, len(pairs), batch_size):
            todo = tuple(k not in stored for k in cell_keys[start:start + batch_size])
            if any(todo):
                chunk = pairs[start:start + batch_size]
                batches.append(Batch(cell, tuple(WorkItem(cell, p, seed) for p, seed in chunk), todo))
                todo_count += sum(todo)
    return batches, todo_count, total - todo_count


def _unfinished(full: list[Batch], done: set[tuple[str, str, int]]) -> tuple[list[Batch], int, int]:
    batches, todo_count, total = [], 0, 0
    for batch in full:
        total += len(batch.items)
        todo = tuple(i.key not in done for i in batch.items)
        if any(todo):
            batches.append(Batch(batch.cell, batch.items, todo))
            todo_count += sum(todo)
    return batches, todo_count, total - todo_count
