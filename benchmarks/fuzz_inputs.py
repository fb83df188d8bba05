"""The long fuzz campaign of the input readers (the suite's tests/test_fuzz_inputs.py runs a few
hundred cases): thousands of mutated sweep files, policies, baselines and pytest-benchmark files,
each accepted or refused with one line, never a traceback or a hang.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_inputs.py --cases 3000 --seed 0

Prints a Markdown table (cases, clean errors, tracebacks, hangs, accepted, slowest case) and the
first tracebacks and hangs, if any; exits 1 when there are any.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from harness.testing.fuzz import FuzzResult, fuzz_gate_files, fuzz_policies, fuzz_sweeps


def main() -> int:
    """Run the three campaigns and print their table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3000, help="cases per campaign")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds before a case counts as a hang")
    args = parser.parse_args()
    campaigns = {"sweep files": fuzz_sweeps, "policy files": fuzz_policies,
                 "baselines + pytest-benchmark JSON": fuzz_gate_files}
    total = FuzzResult()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, campaign in campaigns.items():
            start = time.perf_counter()
            result = campaign(args.cases, args.seed, Path(tmp), args.limit)
            rows.append((name, result.row(), time.perf_counter() - start))
            total.add(result)
    header = ["input", *rows[0][1], "wall (s)"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, row, wall in [*rows, ("all", total.row(), sum(r[2] for r in rows))]:
        print(f"| {name} | " + " | ".join(str(v) for v in row.values()) + f" | {wall:.1f} |")
    for line in total.tracebacks[:5] + [f"hang: {h}" for h in total.hangs[:5]]:
        print("\n" + line)
    return 1 if total.tracebacks or total.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
