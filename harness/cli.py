"""Command line: argument parsing and printing only; the work lives in the modules it calls."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.console import make_console

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audioldm2-harness", description="Evaluate and benchmark AudioLDM 2 text-to-audio generation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) a sweep file into a run folder")
    run.add_argument("config", help="sweep TOML file")
    run.add_argument("--run-dir", help="run folder (default: runs/<sweep name>; an existing one is resumed)")
    run.add_argument("--retry-failed", action="store_true", help="generate failed samples again")
    run.add_argument("--batch-size", type=int, help="samples per pipeline call (outputs do not depend on it)")
    run.add_argument("--no-conditioning-cache", action="store_true", help="re-encode prompts for every batch")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    bench = sub.add_parser("bench", help="measure per-stage latency and memory of every cell")
    bench.add_argument("config", help="sweep TOML file (its [latency] table sets the protocol)")
    bench.add_argument("--run-dir", help="run folder (default: runs/<sweep name>)")
    bench.add_argument("--warmup", type=int, help="warm-up calls, excluded (>= 1)")
    bench.add_argument("--repeats", type=int, help="timed calls per cell (>= 2)")
    bench.add_argument("--no-memory", action="store_true", help="skip the separate memory pass")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=_cmd_bench)

    gv = sub.add_parser("gpu-validate", help="stage table of the full-size base architecture on a GPU")
    gv.add_argument("--out", help="also write the Markdown table to this file")
    gv.add_argument("--repeats", type=int, default=5, help="timed calls per cell")
    gv.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    gv.set_defaults(func=_cmd_gpu_validate)

    ck = sub.add_parser("checkpoints", help="list checkpoints, build the built-in tiny ones")
    ck_sub = ck.add_subparsers(dest="action", required=True)
    ck_sub.add_parser("list", help="the published and built-in checkpoints").set_defaults(func=_cmd_checkpoints_list)
    tiny = ck_sub.add_parser("build-tiny", help="write the tiny checkpoints (no download)")
    tiny.add_argument("--family", choices=["audio", "speech", "all"], default="all")
    tiny.add_argument("--out", help="write here instead of the cache folder")
    tiny.set_defaults(func=_cmd_build_tiny)

    sch = sub.add_parser("schedulers", help="list the schedulers a sweep can use")
    sch.set_defaults(func=_cmd_schedulers)

    pr = sub.add_parser("prompts", help="show a prompt set")
    pr.add_argument("spec", nargs="?", help="built-in name, audiocaps:PATH, musiccaps:PATH or a file")
    pr.add_argument("--limit", type=int, default=20)
    pr.set_defaults(func=_cmd_prompts)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.run import run_sweep
    from harness.summary import print_summary

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    result = run_sweep(args.config, args.run_dir, retry_failed=args.retry_failed,
                       batch_size=args.batch_size, conditioning_cache=not args.no_conditioning_cache,
                       progress=not args.no_progress)
    print_summary(result)
    return EXIT_FAILURES if result.report.failed or result.report.cell_errors else EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import bench_sweep
    from harness.summary import print_bench

    if args.warmup is not None and args.warmup < 1:
        raise ValueError(f"--warmup must be >= 1 (the first call is always a warm-up), got {args.warmup}")
    if args.repeats is not None and args.repeats < 2:
        raise ValueError(f"--repeats must be >= 2, got {args.repeats}")
    result = bench_sweep(args.config, args.run_dir, progress=not args.no_progress, warmup=args.warmup,
                         repeats=args.repeats, memory=False if args.no_memory else None)
    print_bench(result)
    return EXIT_FAILURES if result.cell_errors else EXIT_OK


def _cmd_gpu_validate(args: argparse.Namespace) -> int:
    from harness.gpu_validate import validate

    results, table = validate(repeats=args.repeats, compile_modes=("none",) if args.no_compile else ("none", "default"))
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return EXIT_FAILURES if any(r.cell_errors for r in results) else EXIT_OK


def _cmd_checkpoints_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.checkpoints.registry import BUILTIN, PUBLISHED

    table = Table("id", "task", "needs transcription", "max_new_tokens", "description")
    for info in [*PUBLISHED.values(), *BUILTIN.values()]:
        table.add_row(info.id, info.task, "yes" if info.needs_transcription else "no",
                      str(info.max_new_tokens or 8), info.description)
    make_console().print(table)
    return EXIT_OK


def _cmd_build_tiny(args: argparse.Namespace) -> int:
    from harness.checkpoints.tiny import FAMILIES, save_tiny_checkpoint, tiny_checkpoint_path

    for family in FAMILIES if args.family == "all" else [args.family]:
        if args.out:
            path = save_tiny_checkpoint(family, Path(args.out) / f"tiny-{family}")
        else:
            path = tiny_checkpoint_path(family)
        print(f"tiny-{family}: {path}")
    return EXIT_OK


def _cmd_schedulers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.schedulers import SCHEDULERS, is_available

    table = Table("name", "diffusers class", "available", "notes")
    for entry in SCHEDULERS.values():
        available = "yes" if is_available(entry.name) else f"no (pip install {entry.needs})"
        notes = entry.description + (" [opt-in: allow_unsafe_schedulers]" if entry.opt_in else "")
        table.add_row(entry.name, entry.class_name, available, notes)
    make_console().print(table)
    print("Options: any argument of the class's __init__, e.g. "
          '{ name = "dpm-karras", type = "dpmsolver++", options = { use_karras_sigmas = true } }')
    return EXIT_OK


def _cmd_prompts(args: argparse.Namespace) -> int:
    from harness.data.prompts import available_prompt_sets, load_prompt_set

    if not args.spec:
        print("built-in prompt sets: " + ", ".join(available_prompt_sets()))
        return EXIT_OK
    prompts = load_prompt_set(args.spec)
    print(f"{prompts.name}: {len(prompts.prompts)} prompts (fingerprint {prompts.fingerprint[:12]})")
    for p in prompts.prompts[: args.limit]:
        extra = f"  [says: {p.transcription}]" if p.transcription else ""
        print(f"  {p.id}: {p.text}{extra}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``audioldm2-harness`` console script."""
    args = _parser().parse_args(argv)
    from harness.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"audioldm2-harness {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted; everything stored so far is kept, run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
