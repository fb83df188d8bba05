"""The report stage on tiny runs: every format, escaping, listening audio, failures, two runs, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.report.build import build_report, listen_pairs, parse_formats
from harness.results import cell_frame, load_run, sample_frame
from harness.report.plots import latency_quality_plot, pareto_front, quality_steps_plot, stage_latency_plot
from harness.fileio import sha256_file
from harness.store import StoreError

HTML_PROMPT = '<b>bold</b><script>alert(1)</script><img src=x onerror="window.__pwned=1">'
ERROR = "simulated failure of seed 1 at 2 steps"


def write_run(root: Path, name: str, steps: list[int], schedulers: list[str], fail: bool = False) -> Path:
    """A tiny run (2 prompts, one of them HTML, 2 seeds); with ``fail``, seed 1 fails at 2 steps."""
    import harness.generate.local as local
    from harness.generate.run import run_sweep

    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "html-prompt", "text": HTML_PROMPT}) + "\n"
                       + json.dumps({"id": "plain-prompt", "text": "A dog barks"}) + "\n")
    sweep = root / f"{name}.toml"
    sweep.write_text(f'name = "{name}"\ncheckpoints = ["tiny-audio"]\nschedulers = {json.dumps(schedulers)}\n'
                     f'steps = {json.dumps(steps)}\naudio_lengths_s = [0.5]\nseeds = [0, 1]\ndevice = "cpu"\n'
                     f'batch_size = 1\n[prompts]\nset = "{prompts}"\n')
    real = local.generate_to_host

    def failing(pipe, cond, seeds, n_steps, *args, **kwargs):
        if n_steps == 2 and seeds == [1]:
            raise RuntimeError(ERROR)
        return real(pipe, cond, seeds, n_steps, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        if fail:
            mp.setattr(local, "generate_to_host", failing)
        run_sweep(sweep, root / name, progress=False)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_audio_path) -> dict[str, Path]:
    """'main': 4 cells (2 schedulers x 2, 3 steps), scored, half benched, 4 failed samples;
    'other': one unscored cell, for two-run reports and absent-data cases."""
    from harness.measure.bench import bench_sweep
    from harness.data.synthetic import write_synthetic_reference
    from harness.score.scoring import score_run

    root = tmp_path_factory.mktemp("report")
    run = write_run(root, "main", [2, 3], ["ddim", "euler"], fail=True)
    bench_only = root / "bench.toml"
    bench_only.write_text((root / "main.toml").read_text().replace("steps = [2, 3]", "steps = [3]"))
    bench_sweep(bench_only, run, progress=False, repeats=2, warmup=1, memory=True)
    write_synthetic_reference(root / "ref", 8, duration_s=0.5)
    score_run(run, str(root / "ref"), "mel,tiny-clap", bootstrap=50, cache_dir=root / "cache")
    return {"main": run, "other": write_run(root, "other", [3], ["ddim"])}


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    """The full report of the main run."""
    return build_report([runs["main"]], tmp_path_factory.mktemp("out") / "report")


def test_every_format_and_plot_is_written(report):
    assert set(report.files) == {"html", "md", "csv", "parquet"}
    assert [p.name for p in report.plots] == ["latency_quality.png", "quality_steps.png",
                                              "stage_latency.png", "memory.png"]
    for path in report.paths:
        assert path.is_file() and path.stat().st_size > 0, path
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in report.plots)


def test_csv_and_parquet_round_trip_to_the_frame(runs, report):
    frame = cell_frame([load_run(runs["main"])])
    assert len(frame) == 4 and set(frame["latency_source"]) == {"bench", "run"}
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    from_csv = pd.read_csv(report.files["csv"], dtype={c: str for c in text}, keep_default_na=False,
                           na_values={c: [""] for c in frame.columns if c not in text})
    # The report orders rows by settings; the values are the frame's.
    frame = frame.sort_values(["scheduler", "steps"]).reset_index(drop=True)
    assert list(from_csv["steps"]) == [2, 3, 2, 3]
    pd.testing.assert_frame_equal(from_csv, frame.fillna({c: "" for c in text}), check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_parquet(report.files["parquet"]), frame)


def test_markdown_has_every_cell_and_the_failures(runs, report):
    md = report.files["md"].read_text()
    frame = cell_frame([load_run(runs["main"])])
    table = [line for line in md.splitlines() if line.startswith("| tiny-audio/")]
    assert len(table) == 4
    for _, row in frame.iterrows():
        line = next(t for t in table if t.startswith(f"| {row['label']} |"))
        failed = f"**{row['n_failed']} failed**" if row["n_failed"] else "0"
        assert f"| {row['n_ok']} / {failed} / {row['n_flagged']} |" in line
        assert re.search(r"\| -?[\d.]+ \[-?[\d.e+-]+, -?[\d.e+-]+\] \(n=\d\) \|", line), line
    assert sum(frame["n_failed"]) == 4 and "**Failed samples: 4**" in md
    assert md.count(ERROR) == 2  # one line per failing cell, naming its samples
    assert "html-prompt/seed 1" in md and "<script>" not in md


def test_html_escapes_user_text_and_shows_failures(report):
    page = report.files["html"].read_text()
    assert HTML_PROMPT not in page and "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # the page's own sorting script
    assert "http://" not in page and "https://" not in page  # works offline: nothing remote
    failures = page[page.index('id="failures"'):]
    assert failures.count(ERROR) == 4 and "4 failed and 0 flagged" in failures


def test_listen_audio_is_copied_by_hash_and_failed_pairs_show_the_error(runs, report):
    page = report.files["html"].read_text()
    listen = page[page.index('id="listen"'):page.index('id="failures"')]
    sources = re.findall(r'<audio controls [^>]*src="([^"]+)"', listen)
    # pairs (html-prompt, 0), (html-prompt, 1), (plain-prompt, 0) x 4 cells; seed 1 failed in two
    assert len(sources) == 10 and listen.count(ERROR) == 2
    for src in sources:
        path = report.out_dir / src
        assert path.is_file() and sha256_file(path) == path.stem
    assert sorted(report.audio) == sorted({report.out_dir / s for s in sources})
    samples = sample_frame([load_run(runs["main"])])
    assert listen_pairs(cell_frame([load_run(runs["main"])]), samples, 3) == [
        ("html-prompt", 0), ("html-prompt", 1), ("plain-prompt", 0)]


def test_two_run_report_identifies_both_runs(runs, tmp_path):
    result = build_report([runs["main"], runs["other"]], tmp_path / "ab", labels=["<i>before</i>", "after"],
                          listen=1)
    frame = pd.read_parquet(result.files["parquet"])
    assert frame.groupby("run").size().to_dict() == {"<i>before</i>": 4, "after": 1}
    assert frame.loc[frame["run"] == "after", "fad:mel"].isna().all()  # unscored run: blank, not dropped
    page = result.files["html"].read_text()
    assert "<i>before</i>" not in page and "&lt;i&gt;before&lt;/i&gt;: tiny-audio/ddim/3st" in page
    assert "<th data-type=\"text\">run</th>" in page
    md = result.files["md"].read_text()
    assert md.splitlines()[2].startswith("| run | cell |") and "| after | tiny-audio/ddim/3st" in md


def test_plots_without_their_data_are_skipped(runs, tmp_path):
    frame = cell_frame([load_run(runs["other"])])
    assert latency_quality_plot(frame, tmp_path) is None and quality_steps_plot(frame, tmp_path) is None
    assert stage_latency_plot(frame, tmp_path) == tmp_path / "stage_latency.png"


def test_bad_inputs_give_clear_errors(runs, tmp_path, capsys):
    with pytest.raises(StoreError, match="not a run folder"):
        build_report([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ValueError, match="used twice"):
        build_report([runs["main"], runs["main"]], tmp_path / "out")
    with pytest.raises(ValueError, match="is a run folder"):
        build_report([runs["main"]], runs["other"])
    with pytest.raises(ValueError, match="allowed: html, md, csv, parquet"):
        parse_formats("html,pdf")
    assert parse_formats(" MD,csv,md ") == ("md", "csv")
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err
    assert main(["report", str(runs["main"]), "--out", str(tmp_path / "o"), "--format", "html,pdf"]) == 2
    assert "unknown report format(s) 'pdf'; allowed: html, md, csv, parquet" in capsys.readouterr().err


def test_pareto_front_hand_computed():
    # (3, 4) is dominated by (2, 3); (2, 3.5) by (2, 3) (same x, worse y); (5, 1) by (4, 1).
    x, y = [1, 2, 3, 4, 2, 5, 0.5], [5, 3, 4, 1, 3.5, 1, np.nan]
    assert pareto_front(x, y) == [0, 1, 3]
    # Higher y better: (3, 2) is dominated by (2, 3); equal points dominate neither.
    assert pareto_front([1, 2, 3, 4, 4], [1, 3, 2, 5, 5], higher_y_better=True) == [0, 1, 3, 4]
    assert pareto_front([], []) == []


def test_cli_report_end_to_end(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(runs["main"]), "--format", "md,csv", "--listen", "0"]) == 0
    out = tmp_path / "reports" / "main"  # the default: reports/<run folder name>
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "report.md"]
    printed = capsys.readouterr().out
    assert "md: reports/main/report.md\ncsv: reports/main/cells.csv\n" in printed
    assert main(["report", str(runs["main"]), str(runs["other"]), "--out", str(tmp_path / "ab"),
                 "--label", "before", "--label", "after", "--listen", "1"]) == 0
    assert f"html: {tmp_path / 'ab' / 'index.html'}" in capsys.readouterr().out
    assert (tmp_path / "ab" / "plots" / "memory.png").is_file()


def test_frame_latency_and_rtf_match_what_bench_and_run_measured(make_sweep, tmp_path):
    """RTF against measure.py's own headline (which divides by the batch), p50 against the
    stored median, and run-derived latency against the per-batch timings read back by hand."""
    import sqlite3

    from harness.measure.bench import bench_sweep
    from harness.generate.run import run_sweep

    sweep = make_sweep(steps=[2], latency={"repeats": 3, "batch_sizes": [2], "memory": False})
    bench_sweep(sweep, tmp_path / "bench", progress=False)
    row = cell_frame([load_run(tmp_path / "bench")]).iloc[0]
    db = sqlite3.connect(tmp_path / "bench" / "run.sqlite")
    stored = dict(db.execute("SELECT metric, value FROM measurements WHERE stage IN ('call', 'total') "
                             "AND metric IN ('rtf', 'median')").fetchall())
    assert row["rtf"] == pytest.approx(stored["rtf"], rel=1e-12)
    assert row["latency_ms:total:p50"] == pytest.approx(stored["median"] * 1e3, rel=1e-12)
    assert row["latency_unit"] == "ms per call of 2" and row["latency_source"] == "bench"

    run_sweep(sweep, tmp_path / "run", progress=False)
    row = cell_frame([load_run(tmp_path / "run")]).iloc[0]
    db = sqlite3.connect(tmp_path / "run" / "run.sqlite")
    batches = {t: b for t, b in db.execute("SELECT timings, batch_size FROM samples WHERE status='ok'")}
    per_sample = [json.loads(t)["total"] / b for t, b in batches.items()]
    assert row["latency_ms:total:p50"] == pytest.approx(np.median(per_sample) * 1e3, rel=1e-12)
    assert row["rtf"] == pytest.approx(np.median(per_sample) / 0.5, rel=1e-12)
    assert row["latency_unit"] == "ms per sample"
