"""``gpu-validate``: the stage table and memory of the full-size base architecture on a GPU.

Builds the random-weight ``cvssp/audioldm2`` (published architecture, no download) and
measures 10.24 s of audio with DPM-Solver++ at 20 steps and DDIM at 200 steps, in fp32 and
fp16, with and without ``torch.compile`` of the UNet. Prints a Markdown table to paste into
benchmarks/RESULTS.md, with the card's name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from harness.measure.bench import BenchResult, bench_sweep
from harness.environment import fingerprint
from harness.measure.bench_table import bench_rows
from harness.stages import GENERATION_STAGES

PAIRS = [("dpmsolver++", 20), ("ddim", 200)]


def _sweep_toml(checkpoint: str, device: str, scheduler: str, steps: int, length: float,
                dtypes: list[str], compile_modes: list[str], repeats: int) -> str:
    quoted = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    return (
        f'name = "gpu-validate-{scheduler.replace("+", "p")}-{steps}"\n'
        f'checkpoints = ["{checkpoint}"]\nschedulers = ["{scheduler}"]\nsteps = [{steps}]\n'
        f"audio_lengths_s = [{length}]\ndtypes = {quoted(dtypes)}\ncompile_modes = {quoted(compile_modes)}\n"
        f'device = "{device}"\n[prompts]\nset = "smoke"\n[latency]\nrepeats = {repeats}\nwarmup = 2\n'
    )


def validate(checkpoint: str = "random:cvssp/audioldm2", device: str = "cuda", length: float = 10.24,
             pairs: list[tuple[str, int]] = PAIRS, dtypes: tuple[str, ...] = ("fp32", "fp16"),
             compile_modes: tuple[str, ...] = ("none", "default"), repeats: int = 5,
             run_dir: Path | None = None) -> tuple[list[BenchResult], str]:
    """Run every (scheduler, steps) pair; return the results and a Markdown report."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError("gpu-validate needs a CUDA GPU; none is visible on this machine")
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="gpu-validate-"))
    results = []
    for scheduler, steps in pairs:
        config = run_dir / f"{scheduler}-{steps}.toml"
        config.write_text(_sweep_toml(checkpoint, device, scheduler, steps, length, list(dtypes),
                                      list(compile_modes), repeats))
        results.append(bench_sweep(config, run_dir / f"{scheduler}-{steps}", progress=True))
    return results, markdown(results)


def markdown(results: list[BenchResult]) -> str:
    """The Markdown stage table (medians, ms) with peak memory of every measured cell."""
    env = fingerprint()
    header = ["setting", "dtype", "compile", *GENERATION_STAGES, "ms/step", "total p50", "total p90",
              "stages/total", "RTF", "first call s", "peak MiB"]
    lines = [f"Device: {env.get('gpu', env['cpu'])}; torch {env['versions']['torch']}, "
             f"diffusers {env['versions']['diffusers']}, CUDA {env.get('cuda_version')}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for m, r in zip(result.measurements, bench_rows(result.measurements)):
            values = [r["label"], m.cell.dtype, m.cell.runtime.compile,
                      *[f"{r[s]:.1f}" for s in GENERATION_STAGES], f"{r['step_ms']:.2f}", f"{r['total']:.1f}",
                      f"{r['total_p90']:.1f}", f"{r['sum_over_total']:.4f}", f"{r['rtf']:.3f}",
                      f"{r['first_call_s']:.1f}", f"{r['peak_mib']:.0f}"]
            lines.append("| " + " | ".join(values) + " |")
        lines += [f"| not measured: {cid}: {err} |" for cid, err in result.cell_errors.items()]
    return "\n".join(lines) + "\n"
