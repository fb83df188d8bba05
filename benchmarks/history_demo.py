"""A history from real tiny bench runs, with a slowdown injected at a known commit.

    OMP_NUM_THREADS=1 python benchmarks/history_demo.py --out /tmp/history-demo --runs 12 --slow-from 8 --slow-ms 15

Makes a throwaway git repository with one commit per run (one day apart), benches a one-cell
sweep (tiny-audio, DPM-Solver++ 20 steps, 1 s, batch 1) once per commit, and from commit
``--slow-from`` on sleeps ``--slow-ms`` before every UNet forward (the injected regression: 20
denoising steps, so 20 x that per call). Each run is added to ``<out>/history.sqlite`` under its
commit (dated by ``git show`` in the repository), then ``history report`` writes
``<out>/report`` and the Markdown summary is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path

SWEEP = """name = "history-demo"
checkpoints = ["tiny-audio"]
schedulers = ["dpmsolver++"]
steps = [20]
guidance_scales = [3.5]
audio_lengths_s = [1.0]
seeds = [0]
device = "cpu"

[prompts]
set = "smoke"
limit = 1

[latency]
warmup = 2
repeats = {repeats}
memory = true
batch_sizes = [1]
"""
DELAY_S = [0.0]  # read by the patched UNet forward


def patch_unet() -> None:
    """Sleep DELAY_S[0] before every UNet forward: a slowdown that changes no output."""
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
        AudioLDM2UNet2DConditionModel,
    )

    forward = AudioLDM2UNet2DConditionModel.forward

    def slow_forward(self, *args, **kwargs):
        if DELAY_S[0]:
            time.sleep(DELAY_S[0])
        return forward(self, *args, **kwargs)

    AudioLDM2UNet2DConditionModel.forward = slow_forward


def make_repo(path: Path, n: int) -> list[str]:
    """A git repository with n commits, one a day from 2026-11-01; their hashes, oldest first."""
    path.mkdir(parents=True)
    git = ["git", "-C", str(path), "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for i in range(1, n + 1):
        (path / "file.txt").write_text(f"change {i}\n")
        date = f"2026-11-{i:02d}T12:00:00Z"
        subprocess.run([*git, "add", "file.txt"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", f"commit {i}"], check=True,
                       env={**os.environ, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})
    out = subprocess.run([*git, "rev-list", "--reverse", "HEAD"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> None:
    """Bench, add and report; prints the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="new folder for the repository, runs, history and report")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--slow-from", type=int, default=8, help="first commit (1-based) with the slowdown")
    parser.add_argument("--slow-ms", type=float, default=15.0, help="sleep before each UNet forward, ms")
    parser.add_argument("--repeats", type=int, default=8, help="timed calls per bench")
    args = parser.parse_args()

    from harness.history.report import build_history_report
    from harness.history.store import HistoryStore
    from harness.measure.bench import bench_sweep

    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; give a new folder")
    commits = make_repo(out / "repo", args.runs)
    sweep = out / "sweep.toml"
    sweep.write_text(SWEEP.format(repeats=args.repeats))
    patch_unet()
    with HistoryStore(out / "history.sqlite") as store:
        for i, commit in enumerate(commits, start=1):
            DELAY_S[0] = args.slow_ms / 1e3 if i >= args.slow_from else 0.0
            run = out / "runs" / f"r{i:02d}"
            bench_sweep(sweep, run, progress=False)
            added = store.add(run, commit=commit, repo=out / "repo")
            print(f"run {i:2d} commit {commit[:10]} slowdown {DELAY_S[0] * 1e3:g} ms: {added.points} figures "
                  f"({time.strftime('%H:%M:%S')})", flush=True)
    report = build_history_report(out / "history.sqlite", out / "report", last=args.runs)
    print(f"injected at commit {args.slow_from}: {commits[args.slow_from - 1]}")
    print(report.files["md"].read_text())
    print(f"page: {report.files['html']}")


if __name__ == "__main__":
    main()
