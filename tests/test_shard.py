"""Static shards: parsing, cost model, a deterministic balanced partition, resume-proof selection."""

from __future__ import annotations

import random

import pytest

from harness.spec import expand, parse_spec
from harness.data.prompts import load_prompt_set
from harness.plan import Batch
from harness.plan.shard import (
    SHARD_USAGE, Shard, batch_cost, check_shard_folder, parse_shard, partition, plan_fingerprint, unet_passes,
)
from harness.plan import cut_batches, plan
from harness.store import StoreError


def _plan(**overrides):
    data = {"name": "t", "checkpoints": ["tiny-audio"], "schedulers": ["ddim", "euler", "heun"],
            "steps": [2, 5], "audio_lengths_s": [0.5, 1.0], "seeds": [0, 1, 2], "device": "cpu",
            "batch_size": 2, "prompts": {"set": "smoke", "limit": 3}}
    data.update(overrides)
    spec = parse_spec(data)
    cells = expand(spec, "cpu")
    prompts = load_prompt_set(spec.prompts.set)
    return spec, cells, prompts, cut_batches(spec, cells, prompts, spec.batch_size)


@pytest.mark.parametrize("text,expected", [("1/1", (1, 1)), ("2/4", (2, 4)), (" 4 / 4 ", (4, 4))])
def test_parse_shard(text, expected):
    shard = parse_shard(text)
    assert (shard.index, shard.count) == expected
    assert shard.dirname == f"shard-{expected[0]}-of-{expected[1]}"


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "2/0", "-1/3", "a/b", "1/2/3", ""])
def test_bad_shard_is_refused_with_the_usage(text):
    with pytest.raises(ValueError, match="--shard must look like 2/4 with 1 <= i <= N"):
        parse_shard(text)


def test_cli_bad_shard_is_exit_2(make_sweep, capsys):
    from harness.cli import main

    assert main(["run", make_sweep(), "--shard", "5/4"]) == 2
    assert SHARD_USAGE in capsys.readouterr().err


def test_cost_counts_steps_length_batch_order_and_guidance():
    _, cells, _, batches = _plan(guidance_scales=[1.0, 3.5])
    for b in batches:
        c = b.cell
        order = 2 if c.scheduler_type == "heun" else 1
        cfg = 2 if c.guidance_scale > 1 else 1
        assert unet_passes(c) == order * cfg
        assert batch_cost(b) == c.steps * c.audio_length_s * len(b.items) * order * cfg


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_partition_covers_every_batch_once_and_is_balanced(count):
    _, _, _, batches = _plan()
    part = partition(batches, count)
    chosen = [b for i in range(1, count + 1) for b in part.select(Shard(i, count))]
    assert sorted(map(_key, chosen)) == sorted(map(_key, batches))  # each batch exactly once
    loads = part.loads()
    ideal = sum(map(batch_cost, batches)) / count
    assert max(loads) <= ideal + max(map(batch_cost, batches)) + 1e-9
    assert sum(loads) == pytest.approx(sum(map(batch_cost, batches)))


def test_partition_is_deterministic_and_ignores_cell_order():
    _, _, _, batches = _plan()
    first = {_key(b): o for b, o in zip(batches, partition(batches, 3).owner)}
    assert first == {_key(b): o for b, o in zip(batches, partition(batches, 3).owner)}
    by_cell: dict[str, list[Batch]] = {}
    for b in batches:
        by_cell.setdefault(b.cell.id, []).append(b)
    shuffled_cells = list(by_cell)
    random.Random(0).shuffle(shuffled_cells)
    reordered = [b for cid in shuffled_cells for b in by_cell[cid]]
    assert first == {_key(b): o for b, o in zip(reordered, partition(reordered, 3).owner)}


def test_partition_keeps_cells_whole_where_balance_allows():
    # cells cost X, X, 2X, 2X (two lengths): two shards of X + 2X, no cell split
    _, _, _, batches = _plan(schedulers=["ddim", "euler"], steps=[4], audio_lengths_s=[0.5, 1.0])
    part = partition(batches, 2)
    owners_per_cell: dict[str, set[int]] = {}
    for b, o in zip(batches, part.owner):
        owners_per_cell.setdefault(b.cell.id, set()).add(o)
    assert all(len(o) == 1 for o in owners_per_cell.values())
    assert part.loads()[0] == part.loads()[1]
    assert [r["cells"] for r in part.summary()] == [2, 2]


def test_equal_batches_split_evenly():
    _, _, _, batches = _plan(schedulers=["ddim"], steps=[4], audio_lengths_s=[1.0], seeds=[0, 1, 2, 3],
                             prompts={"set": "smoke", "limit": 3})  # 12 samples, 6 batches of 2
    part = partition(batches, 3)
    assert part.loads() == [batch_cost(batches[0]) * 2] * 3


def test_shard_selection_does_not_depend_on_the_store():
    spec, cells, prompts, batches = _plan()
    done = {i.key for b in batches[::3] for i in b.items[:1]}  # some samples already stored
    for index in (1, 2, 3):
        shard = Shard(index, 3)
        fresh, _, _ = plan(spec, cells, prompts, set(), spec.batch_size, shard)
        resumed, todo, skipped = plan(spec, cells, prompts, done, spec.batch_size, shard)
        assert {_key(b) for b in resumed} <= {_key(b) for b in fresh}
        # resumed batches keep their full neighbours (bit-identical audio) and skip stored samples
        for b in resumed:
            assert all(t == (i.key not in done) for i, t in zip(b.items, b.todo))
        assert todo + skipped == sum(len(b.items) for b in fresh)
    # together the shards do exactly the unsharded plan
    whole, _, _ = plan(spec, cells, prompts, done, spec.batch_size)
    parts = [b for i in (1, 2, 3) for b in plan(spec, cells, prompts, done, spec.batch_size, Shard(i, 3))[0]]
    assert sorted(map(_key, parts)) == sorted(map(_key, whole))


def test_more_shards_than_batches_leaves_some_empty():
    _, _, _, batches = _plan(schedulers=["ddim"], steps=[2], audio_lengths_s=[0.5], seeds=[0])
    part = partition(batches, len(batches) + 2)
    assert sorted(len(part.select(Shard(i, part.count))) for i in range(1, part.count + 1))[:2] == [0, 0]


def test_plan_fingerprint_changes_with_the_plan():
    _, _, _, a = _plan()
    _, _, _, b = _plan(seeds=[0, 1, 2, 3])
    assert plan_fingerprint(a, 2) == plan_fingerprint(list(a), 2)
    assert len({plan_fingerprint(a, 2), plan_fingerprint(a, 3), plan_fingerprint(b, 2)}) == 3


def test_shard_folder_refuses_another_shard_spec(tmp_path):
    stored = {"shard": "2/4", "batch_size": 2}
    check_shard_folder(stored, True, Shard(2, 4), 2, tmp_path)
    check_shard_folder(None, False, Shard(2, 4), 2, tmp_path)  # a new folder
    for shard, batch in [(Shard(3, 4), 2), (Shard(2, 3), 2), (Shard(2, 4), 4), (None, 2)]:
        with pytest.raises(StoreError, match="holds shard 2/4"):
            check_shard_folder(stored, True, shard, batch, tmp_path)
    with pytest.raises(StoreError, match="holds an unsharded run"):
        check_shard_folder(None, True, Shard(1, 2), 2, tmp_path)


def _key(b: Batch) -> tuple:
    return (b.cell.id, tuple((i.prompt.id, i.seed) for i in b.items))
