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
    _add_threads(run)
    run.add_argument("--shard", metavar="I/N",
                     help="do only shard I of N (1-based, e.g. 2/4): a deterministic, cost-balanced part of "
                          "the sweep; default run folder runs/<sweep name>/shard-I-of-N (join them with merge)")
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: this process (default); ray: actors on a Ray cluster, this process writes")
    run.add_argument("--address", help="with --executor ray: the cluster to join (default: start a local one)")
    run.add_argument("--workers", type=int,
                     help="with --executor ray on CPU: number of one-CPU actors (default: the cluster's CPUs; "
                          "on GPUs there is one actor per GPU)")
    run.set_defaults(func=_cmd_run)

    merge = sub.add_parser("merge", help="combine run folders (e.g. the shards of a sweep) into one")
    merge.add_argument("out", help="run folder to merge into (created if needed; merging again is a no-op)")
    merge.add_argument("folders", nargs="+", metavar="SHARD_DIR", help="run folders to merge (only read)")
    merge.add_argument("--allow-env-mismatch", action="store_true",
                       help="merge folders recorded with different versions, git commit or device")
    merge.add_argument("--copy", action="store_true", help="copy audio files instead of hard-linking them")
    merge.set_defaults(func=_cmd_merge)

    verify = sub.add_parser("verify", help="check a run folder: database, and every stored audio file against its sha256")
    verify.add_argument("run_dir", metavar="RUN", help="run folder (only read)")
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.set_defaults(func=_cmd_verify)

    bench = sub.add_parser("bench", help="measure per-stage latency and memory of every cell")
    bench.add_argument("config", help="sweep TOML file (its [latency] table sets the protocol)")
    bench.add_argument("--run-dir", help="run folder (default: runs/<sweep name>)")
    bench.add_argument("--warmup", type=int, help="warm-up calls, excluded (>= 1; default: [latency].warmup, 1)")
    bench.add_argument("--repeats", type=int, help="timed calls per cell (>= 2; default: [latency].repeats, 5)")
    bench.add_argument("--no-memory", action="store_true", help="skip the separate memory pass")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(bench)
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
    rnd = ck_sub.add_parser("build-random", help="write a random-weight checkpoint with a published architecture")
    rnd.add_argument("--like", required=True, help="published id, e.g. cvssp/audioldm2")
    rnd.add_argument("--out", help="write here instead of the cache folder")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.set_defaults(func=_cmd_build_random)
    info = ck_sub.add_parser("info", help="parameter counts per component against the published figures")
    info.add_argument("--like", action="append", help="published id (repeatable; default: all five)")
    info.set_defaults(func=_cmd_checkpoints_info)

    sch = sub.add_parser("schedulers", help="list the schedulers a sweep can use")
    sch.set_defaults(func=_cmd_schedulers)

    pr = sub.add_parser("prompts", help="show a prompt set")
    pr.add_argument("spec", nargs="?", help="built-in name, audiocaps:PATH, musiccaps:PATH or a file")
    pr.add_argument("--limit", type=int, default=20)
    pr.set_defaults(func=_cmd_prompts)

    ref = sub.add_parser("reference", help="reference audio sets for score and compare")
    ref_sub = ref.add_subparsers(dest="action", required=True)
    synth = ref_sub.add_parser("synth", help="write a synthetic reference folder (tones, chirps, noise, clicks)")
    synth.add_argument("folder", metavar="DIR", help="folder to write <kind>_<i>.wav files into (created if needed)")
    synth.add_argument("--n", type=int, default=32, help="number of clips (default 32)")
    synth.add_argument("--seed", type=int, default=0, help="clip i depends only on (seed, i) (default 0)")
    synth.add_argument("--duration", type=float, default=1.0, help="seconds per clip (default 1.0)")
    synth.add_argument("--sample-rate", type=int, default=16000, help="Hz (default 16000, AudioLDM 2's rate)")
    synth.set_defaults(func=_cmd_reference_synth)

    sc = sub.add_parser("score", help="score a run's audio: FAD, KAD (vs a reference) and CLAP score")
    sc.add_argument("run_dir", metavar="RUN", help="run folder")
    sc.add_argument("--reference", required=True, metavar="DIR|cell:ID",
                    help="folder of reference audio (any format soundfile reads), or cell:<id> of this run")
    sc.add_argument("--embedder", default="mel", help="comma-separated embedders, e.g. mel,clap (default mel)")
    _add_weights_options(sc)
    sc.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples over prompts for CIs (0: none)")
    sc.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    sc.add_argument("--metrics", default="fad,kad,clap_score",
                    help="comma-separated registered metrics: fad, kad, clap_score, kl_softmax, kl_sigmoid, "
                         "inception_score (default fad,kad,clap_score)")
    _add_pair_by(sc)
    sc.add_argument("--protocol", help="a named metric set instead of --embedder/--metrics: audioldm-eval "
                                       "(FD, FAD, KL, IS, CLAP as audioldm_eval computes them), stable-audio-metrics "
                                       "or stable-audio-metrics-musiccaps (FD_openl3, KL_passt, CLAP)")
    sc.add_argument("--protocol-embedder", action="append", default=[], metavar="NAME=OTHER",
                    help="run a protocol with another embedder in place of NAME, e.g. pann=tiny-pann (smoke "
                         "tests; recorded in every row)")
    sc.add_argument("--cells", help="comma-separated cell ids (unique prefixes ok); default: every cell")
    sc.add_argument("--cache-dir", help="embedding cache folder, or 'run' for <RUN>/embeddings "
                                        "(default $AUDIOLDM2_HARNESS_CACHE/embeddings)")
    sc.add_argument("--min-duration", type=float, default=0.5, help="reference clips shorter than this are quarantined")
    _add_reference_options(sc)
    sc.add_argument("--device", default="cpu", help="device for model embedders: cpu, cuda[:N] or auto")
    _add_threads(sc, sweep=False)
    sc.add_argument("--no-progress", action="store_true", help="no progress bar")
    sc.set_defaults(func=_cmd_score)

    tr = sub.add_parser("transcribe", help="speech cells: transcribe with Whisper, store WER and CER with CIs")
    tr.add_argument("run_dir", metavar="RUN", help="run folder")
    tr.add_argument("--model", default=None, metavar="ID|DIR",
                    help="Whisper hub id, local folder or tiny-whisper (default openai/whisper-large-v3)")
    tr.add_argument("--revision", help="hub revision of --model")
    tr.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over prompts for CIs (0: none)")
    tr.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    tr.add_argument("--batch-size", type=int, default=8, help="clips per Whisper call")
    tr.add_argument("--cache-dir", help="transcript cache folder (default $AUDIOLDM2_HARNESS_CACHE/transcripts)")
    tr.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    _add_threads(tr, sweep=False)
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_cmd_transcribe)

    rp = sub.add_parser("report", help="HTML/Markdown/CSV/Parquet report of one or more run folders")
    rp.add_argument("runs", nargs="+", metavar="RUN", help="run folders (several: e.g. before and after)")
    rp.add_argument("--out", help="report folder (default: reports/<first RUN folder name>)")
    rp.add_argument("--format", default="html,md,csv,parquet",
                    help="comma-separated subset of html,md,csv,parquet (default: all)")
    rp.add_argument("--listen", type=int, default=3, help="(prompt, seed) pairs to play side by side (0: none)")
    rp.add_argument("--label", action="append", metavar="NAME",
                    help="name of a run in the report (repeat once per RUN, in order; default: folder name)")
    rp.set_defaults(func=_cmd_report)

    cmp = sub.add_parser("compare", help="paired tests of two cells of a run: CLAP, FAD, KAD, KL and IS differences")
    cmp.add_argument("run_dir", metavar="RUN", help="run folder")
    cmp.add_argument("cell_a", metavar="CELL_A", help="cell id (a unique prefix is enough)")
    cmp.add_argument("cell_b", metavar="CELL_B", help="cell id to compare with (e.g. the DDIM 200-step baseline)")
    cmp.add_argument("--reference", required=True, metavar="DIR|cell:ID", help="reference for FAD/KAD and, paired, KL; as in score")
    cmp.add_argument("--embedder", default="mel", help="comma-separated embedders (default mel)")
    cmp.add_argument("--metrics", help="comma-separated registered metrics: fad, kad, clap_score, kl_softmax, "
                                       "kl_sigmoid, inception_score (default: every one of these the embedders "
                                       "support; KL only with --pair-by or a cell: reference)")
    _add_pair_by(cmp)
    cmp.add_argument("--permutations", type=int, default=999,
                     help="label swaps for the FAD/KAD/IS permutation test (default 999)")
    cmp.add_argument("--bootstrap", type=int, default=2000,
                     help="resamples for the paired CLAP score / KL bootstrap (default 2000)")
    cmp.add_argument("--cache-dir", help="embedding cache folder, as in score")
    _add_reference_options(cmp)
    _add_weights_options(cmp)
    cmp.add_argument("--device", default="cpu", help="device for model embedders")
    _add_threads(cmp, sweep=False)
    cmp.add_argument("--no-progress", action="store_true", help="no progress bars")
    cmp.set_defaults(func=_cmd_compare)

    _add_gate_parsers(sub)
    _add_history_parsers(sub)
    return parser


def _add_threads(parser, sweep: bool = True) -> None:
    default = "the sweep's threads, else torch's default" if sweep else "torch's default"
    parser.add_argument("--threads", type=int,
                        help=f"torch CPU threads (default: {default} of one per core); set 1 on a shared or "
                             "loaded machine" + ("; recorded in the run's environment" if sweep else ""))


def _check_threads(args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def _apply_threads(args: argparse.Namespace) -> None:
    """Set torch's threads for a scoring command (score, transcribe, compare) from --threads."""
    from harness.generate.runtime import apply_threads

    _check_threads(args)
    apply_threads(args.threads)


def _cmd_run(args: argparse.Namespace) -> int:
    from harness.generate.run import run_sweep
    from harness.generate.run_table import print_summary

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    _check_threads(args)
    shard = None
    if args.shard is not None:
        from harness.plan.shard import parse_shard

        shard = parse_shard(args.shard)
    if args.executor != "ray" and (args.address or args.workers):
        raise ValueError("--address and --workers need --executor ray")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    options = {}
    if args.executor == "ray":
        from harness.generate.ray import import_ray

        import_ray()  # fail now, with the install command, when Ray is missing
        options = {"address": args.address, "workers": args.workers}
    result = run_sweep(args.config, args.run_dir, retry_failed=args.retry_failed,
                       batch_size=args.batch_size, conditioning_cache=not args.no_conditioning_cache,
                       progress=not args.no_progress, shard=shard, executor=args.executor,
                       executor_options=options, threads=args.threads)
    print_summary(result)
    if result.shard_note:
        print(result.shard_note)
    return EXIT_FAILURES if result.report.failed or result.report.cell_errors else EXIT_OK


def _cmd_merge(args: argparse.Namespace) -> int:
    from harness.merge import merge_runs

    result = merge_runs(args.out, args.folders, allow_env_mismatch=args.allow_env_mismatch, copy=args.copy)
    for warning in result.warnings:
        print(f"audioldm2-harness merge: warning: {warning}", file=sys.stderr)
    print(f"merged {len(result.sources)} folders: {result.samples_added} samples added, "
          f"{result.samples_replaced} failed samples replaced by ok ones, {result.samples_unchanged} already there; "
          f"{result.cells_added} cells, {result.measurements_added} measurements added; "
          f"audio files: {result.files_linked} hard-linked, {result.files_copied} copied")
    print(f"run folder: {Path(result.out).resolve()}")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    from harness.verify import verify_run

    result = verify_run(args.run_dir, progress=not args.no_progress)
    for problem in result.problems[:20]:
        print(f"problem: {problem}")
    if len(result.problems) > 20:
        print(f"... and {len(result.problems) - 20} more problems")
    if result.unreferenced:
        print(f"note: {len(result.unreferenced)} audio file(s) no sample row names (left by an interrupted write "
              f"or merge; harmless), e.g. {result.unreferenced[0]}")
    verdict = "all intact" if result.ok else f"{len(result.problems)} problem(s); rerun the sweep into this " \
        "folder to regenerate missing or changed samples"
    print(f"{result.root}: {result.samples} samples, {result.checked} audio files checked: {verdict}")
    return EXIT_OK if result.ok else EXIT_FAILURES


def _cmd_bench(args: argparse.Namespace) -> int:
    from harness.measure.bench import bench_sweep
    from harness.measure.bench_table import print_bench

    if args.warmup is not None and args.warmup < 1:
        raise ValueError(f"--warmup must be >= 1 (the first call is always a warm-up), got {args.warmup}")
    if args.repeats is not None and args.repeats < 2:
        raise ValueError(f"--repeats must be >= 2, got {args.repeats}")
    _check_threads(args)
    result = bench_sweep(args.config, args.run_dir, progress=not args.no_progress, threads=args.threads,
                         warmup=args.warmup,
                         repeats=args.repeats, memory=False if args.no_memory else None)
    print_bench(result)
    return EXIT_FAILURES if result.cell_errors else EXIT_OK


def _cmd_gpu_validate(args: argparse.Namespace) -> int:
    from harness.measure.gpu_validate import validate

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
                      str(info.max_new_tokens or "config default"), info.description)
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


def _cmd_build_random(args: argparse.Namespace) -> int:
    from harness.checkpoints.random_full import random_checkpoint_path, save_random_checkpoint

    if args.out:
        path = save_random_checkpoint(args.like, Path(args.out), seed=args.seed)
    else:
        path = random_checkpoint_path(args.like)
    print(f"random:{args.like}: {path}")
    return EXIT_OK


def _cmd_checkpoints_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.checkpoints.random_full import LIKE, format_parameter_table

    console = make_console()
    for like in args.like or LIKE:
        table = Table("component", "parameters", "published", "difference", title=f"{like} (architecture)")
        for component, ours, published in format_parameter_table(like):
            diff = f"{(ours - published) / published:+.2%}" if published else "-"
            table.add_row(component, f"{ours / 1e6:,.1f}M", f"{published / 1e6:,.1f}M" if published else "-", diff)
        console.print(table)
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


def _cmd_reference_synth(args: argparse.Namespace) -> int:
    from harness.data.synthetic import write_synthetic_reference

    if args.n < 1 or args.duration <= 0 or args.sample_rate < 1000:
        raise ValueError(f"--n must be >= 1, --duration > 0 and --sample-rate >= 1000; got {args.n}, "
                         f"{args.duration}, {args.sample_rate}")
    paths = write_synthetic_reference(args.folder, args.n, seed=args.seed, sample_rate=args.sample_rate,
                                      duration_s=args.duration)
    print(f"wrote {len(paths)} synthetic clips ({args.duration:g} s, {args.sample_rate} Hz) to "
          f"{Path(args.folder).resolve()}; use it as: score RUN --reference {args.folder}")
    return EXIT_OK


def _cmd_score(args: argparse.Namespace) -> int:
    from harness.score.scoring import print_scores, score_run

    _apply_threads(args)
    result = score_run(args.run_dir, args.reference, args.embedder, clap_model=args.clap_model, weights=_weights(args),
                       device=args.device, bootstrap=args.bootstrap, confidence=args.confidence,
                       cells=args.cells.split(",") if args.cells else None,
                       metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
                       cache_dir=args.cache_dir, min_duration_s=args.min_duration,
                       progress=not args.no_progress, pair_by=args.pair_by,
                       follow_external_links=args.follow_external_links, protocol=args.protocol,
                       substitute=_substitutes(args.protocol_embedder))
    print_scores(result)
    return EXIT_FAILURES if any(r["value"] is None for r in result.rows) else EXIT_OK


def _substitutes(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, other = item.partition("=")
        if not sep or not name.strip() or not other.strip():
            raise ValueError(f"--protocol-embedder takes NAME=OTHER (e.g. pann=tiny-pann), got {item!r}")
        out[name.strip()] = other.strip()
    return out


def _cmd_transcribe(args: argparse.Namespace) -> int:
    from harness.score.asr.transcribe import print_transcribed, transcribe_run
    from harness.score.asr.whisper import DEFAULT_ASR_MODEL

    _apply_threads(args)
    result = transcribe_run(args.run_dir, args.model or DEFAULT_ASR_MODEL, revision=args.revision,
                            device=args.device, batch_size=args.batch_size, bootstrap=args.bootstrap,
                            confidence=args.confidence, cache_dir=args.cache_dir, progress=not args.no_progress)
    print_transcribed(result)
    return EXIT_FAILURES if any(r["value"] is None for r in result.rows) else EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from harness.report.build import build_report

    out = args.out or Path("reports") / Path(args.runs[0]).resolve().name
    result = build_report(args.runs, out, formats=args.format, listen=args.listen, labels=args.label)
    console = make_console()
    for fmt, path in result.files.items():
        console.print(f"{fmt}: {path}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"plots: {len(result.plots)} in {Path(out) / 'plots'}; audio: {len(result.audio)} files in "
                  f"{Path(out) / 'audio'}", highlight=False, soft_wrap=True, markup=False)
    for warning in result.warnings:
        print(f"audioldm2-harness report: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _add_weights_options(parser) -> None:
    parser.add_argument("--clap-model", help="hub id or local folder for the clap embedder (default laion/clap-htsat-fused)")
    parser.add_argument("--pann-weights", help="Cnn14_16k_mAP=0.438.pth for the pann embedder "
                                               "(default $AUDIOLDM2_HARNESS_PANN_WEIGHTS or the harness cache)")
    parser.add_argument("--vggish-weights", help="vggish-10086976.pth for the vggish embedder (default: torch hub cache)")


def _add_pair_by(parser) -> None:
    parser.add_argument("--pair-by", metavar="RULE", help="pair reference files with prompts: stem, audiocaps:CSV or "
                                                          "manifest:CSV (needed by kl_softmax/kl_sigmoid)")


def _add_reference_options(parser) -> None:
    parser.add_argument("--follow-external-links", action="store_true",
                        help="use links in the reference folder that point outside it (default: quarantined)")


def _weights(args: argparse.Namespace) -> dict[str, str]:
    return {name: path for name, path in (("pann", args.pann_weights), ("vggish", args.vggish_weights)) if path}


def _cmd_compare(args: argparse.Namespace) -> int:
    from harness.score.compare import compare_cells, print_comparison

    _apply_threads(args)
    print_comparison(compare_cells(args.run_dir, args.cell_a, args.cell_b, args.reference, args.embedder,
                                   metrics=args.metrics, pair_by=args.pair_by, clap_model=args.clap_model,
                                   weights=_weights(args), device=args.device,
                                   permutations=args.permutations, bootstrap=args.bootstrap,
                                   cache_dir=args.cache_dir, follow_external_links=args.follow_external_links,
                                   progress=not args.no_progress))
    return EXIT_OK


def _add_gate_parsers(sub) -> None:
    gt = sub.add_parser("gate", help="pass, fail or inconclusive: a run (or benchmark JSON) against a baseline under a policy")
    gt.add_argument("candidate", metavar="RUN|JSON", help="run folder, baseline file or pytest-benchmark JSON")
    gt.add_argument("--baseline", required=True, help="baseline file (baseline save), run folder or pytest-benchmark JSON")
    gt.add_argument("--policy", required=True, help="policy TOML: allowed regression per figure (see benchmarks/gates/)")
    _add_gate_outputs(gt)
    gt.set_defaults(func=_cmd_gate)

    bl = sub.add_parser("baseline", help="save a run's figures as a baseline for later gates")
    bl_sub = bl.add_subparsers(dest="action", required=True)
    save = bl_sub.add_parser("save", help="write a baseline summary (keyed by environment) of run folders")
    save.add_argument("runs", nargs="+", metavar="RUN",
                      help="run folders; a cell in several keeps each run's latency and memory (the gate then "
                           "tests against their spread), other figures come from the last")
    save.add_argument("--out", help="baseline file (default: <first RUN>/baseline.json)")
    save.set_defaults(func=_cmd_baseline_save)

    ab = sub.add_parser("gate-ab", help="interleaved A/B latency session of two sweep files, gated as ratios")
    ab.add_argument("baseline_config", metavar="BASELINE.toml", help="sweep file of the baseline configuration")
    ab.add_argument("candidate_config", metavar="CANDIDATE.toml", help="sweep file of the candidate (same cell count)")
    ab.add_argument("--policy", required=True, help="policy TOML (latency_ms:* rules apply to the paired ratios)")
    ab.add_argument("--rounds", type=int, default=10,
                    help="alternating rounds before the first look (each times A once and B once; default 10)")
    ab.add_argument("--max-rounds", type=int,
                    help="round budget: add rounds until every figure is decided or this many are done "
                         "(sequential test with alpha spending; default: --rounds, one look)")
    ab.add_argument("--look-every", type=int, help="rounds added between looks (default: --rounds)")
    ab.add_argument("--spending", choices=["pocock", "obrien-fleming"], default="pocock",
                    help="alpha-spending function of the sequential test (default pocock)")
    ab.add_argument("--warmup", type=int, default=1, help="untimed calls per side first (default 1)")
    ab.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_threads(ab)
    _add_gate_outputs(ab)
    ab.set_defaults(func=_cmd_gate_ab)


def _add_gate_outputs(parser) -> None:
    parser.add_argument("--junit", help="also write JUnit XML here")
    parser.add_argument("--markdown", help="also write the Markdown table here (e.g. for a PR comment)")
    parser.add_argument("--allow-env-mismatch", action="store_true",
                        help="compare figures measured on different GPUs or library versions")


def _cmd_gate(args: argparse.Namespace) -> int:
    from harness.gate import gate

    return _gate_outputs(gate(args.candidate, args.baseline, args.policy, args.allow_env_mismatch), args)


def _cmd_gate_ab(args: argparse.Namespace) -> int:
    from harness.gate.policy import load_policy
    from harness.gate.sequential import looks, sequential_compare
    from harness.measure.ab import ABSession

    policy = load_policy(args.policy)  # read first: a bad policy fails before minutes of timing
    max_rounds = args.max_rounds or args.rounds
    looks(args.rounds, max_rounds, args.look_every)  # a bad schedule fails before timing too
    _check_threads(args)
    session = ABSession(args.baseline_config, args.candidate_config, args.warmup, progress=not args.no_progress,
                        threads=args.threads)
    result = sequential_compare(session.add_rounds, policy, args.rounds, max_rounds, args.look_every,
                                args.spending, args.allow_env_mismatch)
    return _gate_outputs(result, args)


def _gate_outputs(result, args: argparse.Namespace) -> int:
    from harness.gate.output import junit, markdown

    text = markdown(result)
    print(text, end="")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)
    if args.junit:
        junit(result, args.junit)
    return result.exit_code


def _cmd_baseline_save(args: argparse.Namespace) -> int:
    from harness.gate.summary import from_runs, save

    summary = from_runs(args.runs)
    path = save(summary, args.out or Path(args.runs[0]) / "baseline.json")
    n = sum(len(c.figures) for c in summary.cells.values())
    make_console().print(f"baseline: {len(summary.cells)} cells, {n} figures, environment "
                         f"{summary.environment_key()}\nwritten to {path}", highlight=False, soft_wrap=True)
    return EXIT_OK


def _add_history_parsers(sub) -> None:
    hist = sub.add_parser("history", help="every figure over commits, with change points")
    hist_sub = hist.add_subparsers(dest="action", required=True)
    add = hist_sub.add_parser("add", help="append run folders' figures to the history file (again: no change)")
    add.add_argument("runs", nargs="+", metavar="RUN", help="run folders (after bench and/or score)")
    add.add_argument("--history", help="history file, or a folder to keep history.sqlite in (default ./history.sqlite)")
    add.add_argument("--commit", help="git commit the runs measured (default: the one each run recorded)")
    add.add_argument("--commit-time", help="commit time, unix seconds or ISO 8601 (default: git show in --repo, "
                                           "else the run's creation time)")
    add.add_argument("--repo", help="git repository to date the commit in (default: the current directory)")
    add.set_defaults(func=_cmd_history_add)
    rep = hist_sub.add_parser("report", help="HTML page, Markdown summary and CSV/Parquet of the history")
    rep.add_argument("--history", help="history file or folder (default ./history.sqlite)")
    rep.add_argument("--out", default="reports/history", help="report folder (default reports/history)")
    rep.add_argument("--format", default="html,md,csv,parquet", help="comma-separated subset of html,md,csv,parquet")
    rep.add_argument("--last", type=int, default=20, help="the Markdown summary lists steps of the last N commits")
    rep.add_argument("--figure", action="append", metavar="PREFIX",
                     help="only figures starting with PREFIX (repeatable), e.g. latency_ms:total")
    rep.add_argument("--penalty", type=float, help="penalty per step, times log(n) (default 3; larger: fewer steps)")
    rep.add_argument("--min-size", type=int, help="least points per segment (default 2)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    rep.set_defaults(func=_cmd_history_report)


def _cmd_history_add(args: argparse.Namespace) -> int:
    from harness.history.store import HistoryStore

    with HistoryStore(args.history) as store:
        for run in args.runs:
            r = store.add(run, commit=args.commit, commit_time=args.commit_time, repo=args.repo)
            what = f"added {r.points} figures" if r.added else "already in the history, unchanged"
            print(f"{run}: {what} (commit {r.commit[:12]}, dated by {r.commit_time_source})")
        print(f"history: {store.path}")
    return EXIT_OK


def _cmd_history_report(args: argparse.Namespace) -> int:
    from harness.history.changepoints import DEFAULT_MIN_SIZE, DEFAULT_PENALTY
    from harness.history.report import build_history_report

    result = build_history_report(args.history, args.out, args.format, last=args.last,
                                  penalty=DEFAULT_PENALTY if args.penalty is None else args.penalty,
                                  min_size=DEFAULT_MIN_SIZE if args.min_size is None else args.min_size,
                                  figures=args.figure, progress=not args.no_progress)
    print(f"{len(result.steps)} step(s), {len(result.recent_steps)} in the last {args.last} commits")
    for fmt, path in result.files.items():
        print(f"{fmt}: {path}")
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
