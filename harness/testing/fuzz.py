"""Seeded mutation fuzzing of the readers of user files: sweep and policy TOML, baselines and
pytest-benchmark JSON (the tests run a few hundred cases, ``benchmarks/fuzz_inputs.py`` thousands).

Each case mutates a valid file (text-level for TOML: replaced values, deleted, duplicated or
inserted lines, stray bytes, truncation; tree-level for JSON: deleted keys, hostile values,
unknown keys) and feeds it to the reader, and for gate inputs on to the comparison and its
Markdown and JUnit output. A case ends in one of four ways: accepted, a clean error (one of the
errors the CLI prints as one line, with a one-line message), a traceback (any other exception,
or a multi-line message), or a hang (over ``limit_s``, stopped by SIGALRM).
"""

from __future__ import annotations

import json
import math
import random
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import USER_ERRORS

BASE_SWEEP = """\
name = "fuzz"
description = "base of the fuzz cases"
checkpoints = ["tiny-audio", { id = "cvssp/audioldm2", revision = "main" }]
dtypes = ["fp32"]
schedulers = ["ddim", { name = "karras", type = "dpmsolver++", options = { use_karras_sigmas = true } }]
steps = [10, 20]
guidance_scales = [3.5]
negative_prompts = ["", "Low quality."]
audio_lengths_s = [1.0]
seeds = [0, 1]
device = "cpu"
batch_size = 2

[prompts]
set = "smoke"
limit = 4

[latency]
warmup = 1
repeats = 3
batch_sizes = [1, 2]
"""

BASE_POLICY = """\
confidence = 0.95
correction = "none"

[[rule]]
figure = "benchmark:*"
max_regression = "10%"
significance = true

[[rule]]
figure = "extra:ratio"
max_regression = 0.05
better = "lower"
"""

_HUGE = "9" * 400
_TOML_VALUES = [
    "nan", "inf", "-inf", "+inf", "1e308", "1e309", "-1e308", "9223372036854775807", "9223372036854775808",
    "-9223372036854775809", _HUGE, "-1", "0", "1", "0.5", "true", "false", '"2"', '""', '"yes"', "[]", "{}",
    '["a", 1]', '[1, 2.5]', '[true]', '["nan"]', "[nan]", "[inf]", "[0]", "[-1]", "[9223372036854775807]",
    '"\\u0000"', '"\\u001b[31m"', '"../../etc/passwd"', '"/nonexistent/folder"', '"x/y"',
    '"' + "x" * 5000 + '"', "1979-05-27T07:32:00Z", "07:32:00", "0x7fffffffffffffff", "0o777", "1_000",
    "[" * 40 + "1" + "]" * 40, "[" * 3000 + "]" * 3000, "{a = " * 3000 + "1" + "}" * 3000,
    "{ id = \"tiny-audio\", bogus = 1 }", "{ name = \"ddim\", options = { trained_betas = [0.1] } }",
    "{ name = \"u\", type = \"unipc\", options = { solver_p = \"ddim\" } }", "'''multi\nline'''",
]
_NEW_KEYS = ["bogus", "steps", "name", "rule", "a.b", '"k\\nk"', "[[rule]]\nfigure"]
_DEEP = "__deep__"  # replaced by 5,000 nested arrays in the JSON text (json.dumps cannot write them)
_JSON_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, 2**70, -(2**70), 0.5, math.nan, math.inf, -math.inf, 1e308, "", "x",
    "1.0", "nan", [], {}, [1, "a"], {"a": 1}, [math.nan] * 3, "\u0000\n", "x" * 10000,
]


def _deep_json(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class FuzzResult:
    """Counts of outcomes, and the first few tracebacks and hangs for the report."""

    cases: int = 0
    errors: int = 0
    accepted: int = 0
    tracebacks: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    slowest_s: float = 0.0

    def add(self, other: "FuzzResult") -> None:
        """Fold ``other``'s counts into this one."""
        self.cases += other.cases
        self.errors += other.errors
        self.accepted += other.accepted
        self.tracebacks += other.tracebacks
        self.hangs += other.hangs
        self.slowest_s = max(self.slowest_s, other.slowest_s)

    def row(self) -> dict[str, Any]:
        """The figures of a results table."""
        return {"cases": self.cases, "clean errors": self.errors, "tracebacks": len(self.tracebacks),
                "hangs": len(self.hangs), "accepted": self.accepted, "slowest case (s)": round(self.slowest_s, 3)}


class _Hang(BaseException):
    """Raised by SIGALRM in a case that ran too long (a BaseException: no reader may swallow it)."""


def run_case(label: str, fn: Callable[[], Any], result: FuzzResult, limit_s: float) -> None:
    """Run one case and count its outcome."""
    def alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    # An outer alarm (pytest-timeout's) is put back afterwards with what was left of it.
    outer, _ = signal.setitimer(signal.ITIMER_REAL, limit_s)
    start = time.perf_counter()
    result.cases += 1
    try:
        fn()
        result.accepted += 1
    except _Hang:
        result.hangs.append(label)
    except USER_ERRORS as err:
        message = str(err)
        if "\n" in message or not message.strip():
            result.tracebacks.append(f"{label}: multi-line or empty message: {message[:300]!r}")
        else:
            result.errors += 1
    except Exception:  # noqa: BLE001 - a traceback is what this counts
        result.tracebacks.append(f"{label}: {traceback.format_exc(limit=-3)[-1500:]}")
    finally:
        elapsed = time.perf_counter() - start
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - elapsed, 1e-3))
        result.slowest_s = max(result.slowest_s, elapsed)


# --- TOML text mutations ------------------------------------------------------------------------

def mutate_toml(text: str, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation of a TOML text: (what was done, the new file's bytes)."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    kind = rng.choice(["value", "value", "value", "element", "delete", "duplicate", "insert", "bytes",
                       "truncate", "key"])
    if kind in ("value", "element") and " = " in lines[i]:
        key, value = lines[i].split(" = ", 1)
        new = rng.choice(_TOML_VALUES)
        if kind == "element" and value.startswith("["):
            items = value.strip("[]").split(", ")
            items[rng.randrange(len(items))] = new
            new = "[" + ", ".join(items) + "]"
        lines[i] = f"{key} = {new}"
        return f"{kind} {key.strip()} = {new[:40]}", "\n".join(lines).encode()
    if kind == "delete":
        return f"delete line {i + 1}", "\n".join(lines[:i] + lines[i + 1:]).encode()
    if kind == "duplicate":
        return f"duplicate line {i + 1}", "\n".join(lines[: i + 1] + lines[i:]).encode()
    if kind == "insert":
        new = f"{rng.choice(_NEW_KEYS)} = {rng.choice(_TOML_VALUES)}"
        return f"insert {new[:40]}", "\n".join(lines[:i] + [new] + lines[i:]).encode()
    if kind == "bytes":
        data = text.encode()
        at = rng.randrange(len(data))
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        return f"bytes {junk!r} at {at}", data[:at] + junk + data[at:]
    if kind == "truncate":
        data = text.encode()
        at = rng.randrange(len(data))
        return f"truncate at {at}", data[:at]
    new_key = rng.choice(["stepz", "Steps", "", "a\tb", "ü", "prompts.limit"])
    return f"key {new_key!r}", "\n".join(lines[:i] + [f'"{new_key}" = 1'] + lines[i:]).encode()


# --- JSON tree mutations ------------------------------------------------------------------------

def mutate_tree(tree: Any, rng: random.Random) -> tuple[str, Any]:
    """One random mutation of a JSON tree (a deep copy is changed): (what was done, the new tree)."""
    tree = json.loads(json.dumps(tree))
    path: list[Any] = []
    node = tree
    while isinstance(node, (dict, list)) and node and rng.random() < 0.75:
        key = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path.append(key)
        node = node[key]
    if not path:
        return "replace the whole file", rng.choice(_JSON_VALUES + [_deep_json(50)])
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    kind = rng.choice(["value", "value", "value", "delete", "unknown", "deep"])
    where = "/".join(map(str, path))
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return f"delete {where}", tree
    if kind == "unknown" and isinstance(parent, dict):
        parent["bogus_key"] = 1
        return f"unknown key beside {where}", tree
    value = rng.choice([_deep_json(40), _DEEP]) if kind == "deep" else rng.choice(_JSON_VALUES)
    parent[path[-1]] = value
    return f"set {where} = {json.dumps(value)[:40] if not isinstance(value, list) or len(str(value)) < 60 else 'deep list'}", tree


def base_benchmark_json() -> dict[str, Any]:
    """A valid pytest-benchmark file with saved data and numeric extra info."""
    data = [1.0 + 0.01 * i for i in range(6)]
    stats = {"min": 1.0, "max": 1.05, "median": 1.025, "mean": 1.025, "stddev": 0.0187, "rounds": 6,
             "iterations": 1, "data": data}
    return {"machine_info": {"cpu": {"brand_raw": "Fuzz CPU"}, "processor": "x86_64", "python_version": "3.11.7"},
            "commit_info": {"id": "abc"}, "version": "5.1.0",
            "benchmarks": [{"name": "test_a", "fullname": "b.py::test_a", "group": None, "stats": stats,
                            "extra_info": {"ratio": 1.0, "label": "x"}, "options": {}, "params": None}]}


def base_baseline_json() -> dict[str, Any]:
    """A valid baseline file (as ``baseline save`` writes) with the benchmark's figures."""
    from dataclasses import asdict

    from harness.gate.summary import SCHEMA, from_benchmark_json

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.json"
        path.write_text(json.dumps(base_benchmark_json()))
        summary = from_benchmark_json(path)
    return {"schema": SCHEMA, "kind": "audioldm2-harness baseline", "source": "fuzz",
            "environment": summary.environment,
            "cells": {k: {"label": c.label, "figures": {n: asdict(f) for n, f in c.figures.items()}}
                      for k, c in summary.cells.items()}}


# --- the campaigns ------------------------------------------------------------------------------

def fuzz_sweeps(n: int, seed: int, folder: Path, limit_s: float = 10.0) -> FuzzResult:
    """``n`` mutated sweep files through ``load_spec`` and ``expand``; half text-level, half tree-level."""
    import tomllib

    from harness.spec import expand, load_spec, parse_spec

    rng, result = random.Random(seed), FuzzResult()
    base_tree = tomllib.loads(BASE_SWEEP)
    # Warm-up, untimed: checking scheduler options imports diffusers (and torch) once, which
    # takes longer than a case may; an alarm in the middle of an import would break it.
    from harness.schedulers import SCHEDULERS, check_options

    expand(parse_spec(base_tree), "cpu")
    for name in SCHEDULERS:
        check_options(name, {"num_train_timesteps": 1000} if name != "edm-euler" else {"sigma_min": 0.002})
    path = folder / "sweep.toml"
    for i in range(n):
        if i % 2 == 0:
            label, data = mutate_toml(BASE_SWEEP, rng)
            path.write_bytes(data)
            run_case(f"sweep text {i}: {label}", lambda: expand(load_spec(path), "cpu"), result, limit_s)
        else:
            label, tree = mutate_tree(base_tree, rng)
            run_case(f"sweep tree {i}: {label}", lambda: expand(parse_spec(tree), "cpu"), result, limit_s)
    return result


def fuzz_policies(n: int, seed: int, folder: Path, limit_s: float = 10.0) -> FuzzResult:
    """``n`` mutated policy files through ``load_policy``."""
    from harness.gate.policy import load_policy

    rng, result = random.Random(seed), FuzzResult()
    path = folder / "policy.toml"
    for i in range(n):
        label, data = mutate_toml(BASE_POLICY, rng)
        path.write_bytes(data)
        run_case(f"policy {i}: {label}", lambda: load_policy(path), result, limit_s)
    return result


def fuzz_gate_files(n: int, seed: int, folder: Path, limit_s: float = 10.0) -> FuzzResult:
    """``n`` mutated baselines and pytest-benchmark files, each gated both ways against the valid one."""
    from harness.gate.compare import compare
    from harness.gate.output import junit, markdown
    from harness.gate.policy import load_policy
    from harness.gate.summary import load

    rng, result = random.Random(seed), FuzzResult()
    (folder / "policy.toml").write_text(BASE_POLICY)
    policy = load_policy(folder / "policy.toml")
    bases = {"benchmark": base_benchmark_json(), "baseline": base_baseline_json()}
    good = folder / "good.json"
    good.write_text(json.dumps(bases["benchmark"]))
    path = folder / "mutated.json"

    def gate_both_ways() -> None:
        mutated, valid = load(path), load(good)
        for base, cand in ((valid, mutated), (mutated, valid)):
            outcome = compare(base, cand, policy, allow_env_mismatch=True)
            markdown(outcome)
            junit(outcome, folder / "junit.xml")

    for i in range(n):
        kind = "benchmark" if i % 2 == 0 else "baseline"
        label, tree = mutate_tree(bases[kind], rng)
        if rng.random() < 0.1:  # byte-level: a cut file, with a stray non-UTF-8 byte
            label, text = "truncated + \\xff", json.dumps(bases[kind]).encode()[: rng.randrange(400)] + b"\xff"
        else:
            text = json.dumps(tree).replace(f'"{_DEEP}"', "[" * 5000 + "]" * 5000).encode()
        path.write_bytes(text)
        run_case(f"{kind} {i}: {label}", gate_both_ways, result, limit_s)
    return result
