"""Planning a sweep of 1,000,000 samples (10 cells x 25,000 prompts x 4 seeds), fresh and
fully stored (resume), against the planner as it was before (cell ids re-hashed for every
sample, one frozen dataclass per sample, every key built as a tuple), in one session.

The group's relative column is the speed-up; ``extra_info`` has the sample counts.
Run: python -m pytest benchmarks/test_bench_plan.py
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from harness.data.prompts import Prompt, PromptSet
from harness.plan import plan
from harness.spec import SweepSpec, expand

N_PROMPTS, SEEDS = 25_000, [0, 1, 2, 3]


@pytest.fixture(scope="module")
def sweep():
    spec = SweepSpec.model_validate({
        "name": "million", "checkpoints": ["tiny-audio"], "schedulers": ["ddim", "euler"],
        "steps": [10, 20, 30, 40, 50], "seeds": SEEDS, "device": "cpu", "batch_size": 4,
        "prompts": {"set": "smoke"},
    })
    cells = expand(spec, "cpu")
    prompts = PromptSet(name="synthetic", prompts=tuple(Prompt(id=f"p{i}", text=f"sound {i}") for i in range(N_PROMPTS)))
    done = {(c.id, p.id, s) for c in cells for p in prompts.prompts for s in SEEDS}
    assert len(cells) * N_PROMPTS * len(SEEDS) == len(done) == 1_000_000
    return spec, cells, prompts, done


@dataclass(frozen=True)
class _ItemBefore:
    cell: object
    prompt: Prompt
    seed: int

    @property
    def key(self):
        cell_json = json.dumps(self.cell.model_dump(), sort_keys=True, separators=(",", ":"))
        return (hashlib.sha256(cell_json.encode()).hexdigest()[:16], self.prompt.id, self.seed)


def _plan_before(spec, cells, prompts, done, batch_size):
    """The planner before this change, kept here as the baseline."""
    batches, todo_count, total = [], 0, 0
    for cell in cells:
        items = [_ItemBefore(cell, p, seed) for p in prompts.prompts for seed in spec.seeds]
        for start in range(0, len(items), batch_size):
            chunk = tuple(items[start:start + batch_size])
            total += len(chunk)
            todo = tuple(i.key not in done for i in chunk)
            if any(todo):
                batches.append((cell, chunk, todo))
                todo_count += sum(todo)
    return batches, todo_count, total - todo_count


@pytest.mark.parametrize("state", ["fresh", "fully-stored"])
@pytest.mark.parametrize("planner", ["now", "before"])
def test_plan_a_million_samples(benchmark, sweep, state, planner):
    spec, cells, prompts, done = sweep
    benchmark.group = f"plan 1,000,000 samples ({state})"
    stored = set() if state == "fresh" else done
    fn = plan if planner == "now" else _plan_before
    batches, todo, skipped = benchmark.pedantic(fn, args=(spec, cells, prompts, stored, 4), rounds=1, iterations=1)
    assert (todo, skipped) == ((1_000_000, 0) if state == "fresh" else (0, 1_000_000))
    benchmark.extra_info.update({"samples": 1_000_000, "batches_to_run": len(batches)})
