"""Replay issue 17's nine numbered defects against one checkout of the harness.

Each case builds its attack in a fresh temporary folder and runs the harness CLI of whichever
checkout is given (``--checkout DIR`` goes first on PYTHONPATH) in a subprocess with a timeout,
so the same script drives the code from before the robustness fixes and the code after them:

    python benchmarks/robustness_replay.py --checkout /work/wt-before   # e.g. 6cb3420
    python benchmarks/robustness_replay.py --checkout .                 # HEAD

It prints one Markdown table row per case: defect number, case, exit code, a short excerpt of
what the command printed, and the outcome observed on disk (files, rows, bytes) in words.
The script never imports the harness itself. Cases that may eat memory or hang (FIFO, 1 Hz
header, huge step count) run under a watchdog: killed above ``--mem-limit-gib`` of RSS (plus an
address-space cap at twice that) or after their timeout, reported as "killed at limit".
Nothing touches the network (HF_HUB_OFFLINE=1); the built-in ``tiny-audio`` checkpoint is used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

ENTRY = "from harness.cli import main; raise SystemExit(main())"
GIB = 1024 ** 3
NUL = b"\x00"
TMP_PREFIX = [""]  # the run's temporary folder, shown as $TMP in excerpts


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    wall: float
    peak_rss: int
    killed: str = ""  # "" or why the watchdog stopped it


class Harness:
    """Runs the CLI of one checkout in subprocesses (cwd = a case folder, never the checkout)."""

    def __init__(self, checkout: Path, python: str, mem_limit: int, cache: str):
        self.checkout = checkout
        self.python = python
        self.mem_limit = mem_limit
        self.env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                        AUDIOLDM2_HARNESS_CACHE=cache, COLUMNS="240", NO_COLOR="1", TERM="dumb",
                        PYTHONDONTWRITEBYTECODE="1")

    def which(self) -> str:
        res = subprocess.run([self.python, "-c", "import harness; print(harness.__file__)"], env=self.env,
                             cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60)
        return res.stdout.strip() or res.stderr.strip().splitlines()[-1]

    def cli(self, args: list[str], cwd: Path, timeout: float = 120, watch_memory: bool = False) -> Result:
        limit = self.mem_limit

        def cap() -> None:
            if watch_memory:  # backstop: the RSS watchdog below normally acts first
                resource.setrlimit(resource.RLIMIT_AS, (2 * limit, 2 * limit))

        start = time.monotonic()
        proc = subprocess.Popen([self.python, "-c", ENTRY, *args], cwd=cwd, env=self.env, text=True,
                                errors="replace", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=cap)
        peak, killed = 0, ""
        while True:
            try:
                out, err = proc.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            peak = max(peak, _rss(proc.pid))
            elapsed = time.monotonic() - start
            if watch_memory and peak > limit:
                killed = f"killed at limit: RSS {peak / GIB:.1f} GiB > {limit / GIB:.0f} GiB after {elapsed:.0f} s"
            elif elapsed > timeout:
                killed = f"killed at limit: still running after {timeout:.0f} s (RSS {peak / GIB:.2f} GiB)"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                break
        return Result(proc.returncode, out, err, time.monotonic() - start, peak, killed)


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# ----------------------------------------------------------------------------- small helpers

BOX = re.compile(r"[\u2500-\u257f]")


def excerpt(res: Result, key: str | None = None, width: int = 110) -> str:
    """First line of stderr on failure (the error line of a traceback), else a key line of stdout."""
    if res.killed:
        return res.killed
    out_lines = [ln.strip() for ln in res.out.splitlines() if ln.strip()]
    err_lines = [ln.strip() for ln in res.err.splitlines() if ln.strip()]
    line = ""
    if err_lines and any(ln.startswith("Traceback") for ln in err_lines):
        line = "Traceback ... " + err_lines[-1]
    elif key:
        line = next((ln for ln in out_lines + err_lines if re.search(key, ln)), "")
    if not line and err_lines and res.rc:
        line = err_lines[0]
    if not line:
        line = (out_lines or err_lines or ["(nothing printed)"])[-1]
    line = BOX.sub(" ", line).replace(TMP_PREFIX[0], "$TMP/") if TMP_PREFIX[0] else BOX.sub(" ", line)
    line = re.sub(r"\s+", " ", line).strip()
    return line if len(line) <= width else line[: width - 3] + "..."


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_wav(path: Path, seconds: float, freq: float, rate: int = 16000) -> None:
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * t / rate) * (1 + 0.3 * math.sin(t / 700.0))))
            for t in range(frames)))


def reference_folder(path: Path, n: int = 3) -> Path:
    path.mkdir(parents=True)
    for i in range(n):
        write_wav(path / f"r{i}.wav", 2.0, 220.0 * (i + 1))
    return path


def sweep(path: Path, *, extra: str = "", steps: str = "[3]", seeds: str = "[0, 1]", guidance: str = "[3.5]",
          checkpoints: str = '["tiny-audio"]', prompts: str = 'set = "smoke"\nlimit = 2', name: str = "t") -> Path:
    path.write_text(
        f'name = "{name}"\ncheckpoints = {checkpoints}\nschedulers = ["ddim"]\nsteps = {steps}\n'
        f"guidance_scales = {guidance}\naudio_lengths_s = [0.5]\nseeds = {seeds}\n"
        f'device = "cpu"\nbatch_size = 2\n{extra}\n[prompts]\n{prompts}\n')
    return path


def db_rows(run: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{run / 'run.sqlite'}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def tables(run: Path) -> list[str]:
    db = run / "run.sqlite"
    if not db.exists():
        return []
    try:
        return [r[0] for r in db_rows(run, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    except sqlite3.Error as err:
        return [f"<{err}>"]


def ok_samples(run: Path) -> list[tuple[str, str, str]]:
    return db_rows(run, "SELECT prompt_id, audio_path, audio_sha256 FROM samples WHERE status='ok' ORDER BY rowid")


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("writer.lock", "writer.pid"))
    return dst


def checkpoint_wal(run: Path) -> None:
    con = sqlite3.connect(run / "run.sqlite")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def generated_line(res: Result) -> str:
    m = re.search(r"(\d+) samples planned, (\d+) already stored, (\d+) generated, (\d+) failed", res.out)
    return m.group(0) if m else ""


# ----------------------------------------------------------------------------- the cases


class Replay:
    def __init__(self, h: Harness, work: Path, timeout: float):
        self.h = h
        self.work = work
        self.timeout = timeout
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.base: Path | None = None
        self.base_sweep: Path | None = None

    def fresh(self, name: str) -> Path:
        d = self.work / name
        d.mkdir()
        return d

    def row(self, defect: str, case: str, res: Result | None, outcome: str, key: str | None = None) -> None:
        rc = "-" if res is None else ("killed" if res.killed else str(res.rc))
        text = "" if res is None else excerpt(res, key)
        self.rows.append((defect, case, rc, text, outcome))
        print(f"  [{defect}] {case}: rc={rc} ({0 if res is None else res.wall:.1f} s) {outcome}", file=sys.stderr)

    def make_base(self) -> None:
        d = self.fresh("base")
        self.base_sweep = sweep(d / "sweep.toml")
        res = self.h.cli(["run", str(self.base_sweep), "--run-dir", str(d / "run"), "--no-progress"], d, self.timeout)
        if res.rc != 0 or len(ok_samples(d / "run")) != 4:
            raise SystemExit(f"base run failed (rc {res.rc}):\n{res.out}\n{res.err}")
        self.base = d / "run"

    # 1 ------------------------------------------------------------------------------------
    def d1(self) -> None:
        d = self.fresh("d1")
        run = copy_run(self.base, d / "run")
        con = sqlite3.connect(run / "run.sqlite")
        with con:
            con.execute("UPDATE samples SET audio_path='/etc/passwd' WHERE rowid=(SELECT min(rowid) FROM samples)")
        con.close()
        res = self.h.cli(["report", str(run), "--format", "html", "--out", str(d / "rep")], d, self.timeout)
        secret = Path("/etc/passwd").read_bytes()
        leaked = [p for p in files_under(d / "rep") if p.read_bytes() == secret]
        if leaked:
            outcome = f"copied /etc/passwd into the report (rep/audio/<hash>.wav: {len(leaked)} file), exit {res.rc}"
        elif res.rc != 0:
            outcome = "refused; /etc/passwd not copied"
        else:
            outcome = "report written; /etc/passwd not copied"
        self.row("1", "copied run, one samples.audio_path = /etc/passwd; `report --format html`", res, outcome)

    # 2 ------------------------------------------------------------------------------------
    def d2(self) -> None:
        d = self.fresh("d2")
        prompts = d / "collide.jsonl"
        prompts.write_text(json.dumps({"id": "a/b", "text": "A dog barks loudly"}) + "\n"
                           + json.dumps({"id": "a_b-c14cddc0", "text": "Rain on a tin roof"}) + "\n")
        s = sweep(d / "sweep.toml", seeds="[0]", prompts=f'set = "{prompts}"')
        run = d / "run"
        res = self.h.cli(["run", str(s), "--run-dir", str(run), "--no-progress"], d, self.timeout)
        if not (run / "run.sqlite").exists() or "samples" not in tables(run):
            self.row("2", "prompt ids `a/b` and `a_b-c14cddc0` in one prompt file; `run`", res,
                     "refused before generating" if res.rc else "no store written", key="generated|error")
            return
        rows = ok_samples(run)
        paths = {p for _, p, _ in rows}
        wavs = [p for p in files_under(run / "audio") if p.suffix == ".wav"]
        bad = [pid for pid, p, h in rows if not (run / p).exists() or sha256(run / p) != h]
        if len(paths) < len(rows) or bad:
            outcome = (f"{len(rows)} rows ok, {len(wavs)} WAV file(s): both ids wrote {sorted(paths)[0]}; "
                       f"{len(bad)} row(s) whose sha256 no longer matches its file")
        else:
            outcome = f"{len(rows)} rows ok, {len(wavs)} distinct WAV files, every sha256 matches"
        self.row("2", "prompt ids `a/b` and `a_b-c14cddc0` in one prompt file; `run`", res, outcome,
                 key="generated")

    # 3 ------------------------------------------------------------------------------------
    def d3(self) -> None:
        d = self.fresh("d3")
        ref = reference_folder(d / "ref")
        run = copy_run(self.base, d / "run")
        rows = ok_samples(run)
        deleted, flipped = run / rows[0][1], run / rows[1][1]
        deleted.unlink()
        data = bytearray(flipped.read_bytes())
        for i in range(2000, 2100):
            data[i] ^= 0xFF
        flipped.write_bytes(bytes(data))
        flipped_bytes = bytes(data)
        res = self.h.cli(["score", str(run), "--reference", str(ref), "--metrics", "fad,kad", "--bootstrap", "0",
                          "--no-progress", "--cache-dir", str(d / "emb")], d, self.timeout)
        ns = [r[0] for r in db_rows(run, "SELECT n FROM metrics WHERE metric='fad'")] if "metrics" in tables(run) else []
        if res.rc == 0 and ns:
            outcome = f"exit 0, FAD over n={ns[-1]} of 4: deleted file dropped silently, changed file scored as the original"
            if re.search(re.escape(deleted.name) + "|missing|changed|sha256", res.out + res.err):
                outcome = f"exit 0, n={ns[-1]}, but it names the missing/changed file"
        else:
            outcome = "refused, naming the changed/missing file" if (deleted.name in res.err + res.out or flipped.name in res.err + res.out) else "refused"
        self.row("3", "one WAV deleted, one with 100 bytes flipped; `score`", res, outcome)

        rep = d / "rep"
        res = self.h.cli(["report", str(run), "--format", "html", "--out", str(rep)], d, self.timeout)
        served = [p for p in files_under(rep) if p.suffix == ".wav" and p.read_bytes() == flipped_bytes]
        if served:
            outcome = f"exit {res.rc}: served the changed audio as {served[0].name[:12]}...wav (the original's sha256)"
        elif res.rc == 0:
            warned = [n for n in (deleted.name, flipped.name) if n in res.err]
            outcome = (f"exit 0, changed audio not served; warned naming {len(warned)} of the 2 files"
                       if warned else "exit 0, changed audio not served")
        else:
            outcome = "refused, naming the file" if (deleted.name in res.err or flipped.name in res.err) else "refused"
        self.row("3", "same run; `report --format html`", res, outcome, key="warning")

        res = self.h.cli(["run", str(self.base_sweep), "--run-dir", str(run), "--no-progress"], d, self.timeout)
        repaired = [p.name for p in (deleted, flipped)
                    if p.exists() and sha256(p) == next(h for _, ap, h in ok_samples(run) if run / ap == p)]
        said = generated_line(res)
        outcome = (f"said \"{said}\"; repaired {len(repaired)} of 2 (deleted file "
                   f"{'back' if deleted.exists() else 'still missing'}, changed file "
                   f"{'restored' if flipped.name in repaired else 'still changed'})")
        self.row("3", "same run; `run` the sweep again (resume)", res, outcome, key="already stored|missing|changed")

    # 4 ------------------------------------------------------------------------------------
    def d4(self) -> None:
        d = self.fresh("d4")
        base = d / "baseline.json"
        res = self.h.cli(["baseline", "save", str(self.base), "--out", str(base)], d, self.timeout)
        if res.rc != 0:
            self.row("4", "baseline save", res, "could not save a baseline")
            return
        good = json.loads(base.read_text())
        nan = json.loads(base.read_text())
        for cell in nan["cells"].values():
            for name, fig in cell["figures"].items():
                if name.startswith(("latency", "memory")):
                    fig["value"] = float("nan")
                    if fig.get("samples"):
                        fig["samples"] = [float("nan")] * len(fig["samples"])
        (d / "nan.json").write_text(json.dumps(nan))
        empty = dict(good, cells={})
        (d / "empty.json").write_text(json.dumps(empty))
        policy = self.h.checkout / "benchmarks" / "gates" / "ci-latency.toml"

        def verdict(res: Result) -> str:
            if res.killed:
                return res.killed
            text = res.out + res.err
            if "Traceback" in res.err:
                return f"traceback, exit {res.rc} (the exit code the README gives to a regression)"
            if res.rc == 0 and "PASS" in text:
                m = re.search(r"(\d+) figures gated", text)
                return f"PASS, exit 0 ({m.group(0) if m else 'gated'})" + (" with nan figures" if "nan" in text else "")
            if res.rc == 2:
                return "exit 2: " + ("cannot compare (NaN is not a pass)" if "CANNOT COMPARE" in text else "refused as malformed/empty")
            return f"exit {res.rc}"

        res = self.h.cli(["gate", str(self.base), "--baseline", str(d / "nan.json"), "--policy", str(policy)],
                         d, self.timeout)
        self.row("4", "baseline with NaN latency figures; `gate RUN --baseline nan.json`", res, verdict(res),
                 key=r"gate: |figures gated")
        res = self.h.cli(["gate", str(self.base), "--baseline", str(d / "empty.json"), "--policy", str(policy)],
                         d, self.timeout)
        self.row("4", 'baseline with `"cells": {}`; `gate`', res, verdict(res), key=r"gate: |figures gated")

        def bench(name: str, stats: bool) -> dict:
            b = {"name": name, "fullname": f"benchmarks/test_x.py::{name}", "group": None, "params": None,
                 "extra_info": {}}
            if stats:
                b["stats"] = {"min": 0.09, "max": 0.11, "mean": 0.1, "stddev": 0.005, "rounds": 10, "median": 0.1,
                              "iqr": 0.004, "q1": 0.098, "q3": 0.102, "iqr_outliers": 0, "stddev_outliers": 0,
                              "outliers": "0;0", "ld15iqr": 0.09, "hd15iqr": 0.11, "ops": 10.0, "total": 1.0,
                              "iterations": 1}
            return b

        def pb(stats: bool) -> dict:
            return {"machine_info": {"node": "x", "processor": "x86_64", "machine": "x86_64",
                                     "python_version": "3.12.0", "cpu": {"brand_raw": "CPU"}},
                    "commit_info": {"id": "0" * 40}, "benchmarks": [bench("test_a", stats)],
                    "datetime": "2026-01-01T00:00:00", "version": "5.1.0"}

        (d / "pb-good.json").write_text(json.dumps(pb(True)))
        (d / "pb-nostats.json").write_text(json.dumps(pb(False)))
        res = self.h.cli(["gate", str(d / "pb-nostats.json"), "--baseline", str(d / "pb-good.json"), "--policy",
                          str(self.h.checkout / "benchmarks" / "gates" / "pytest-benchmark.toml")], d, self.timeout)
        self.row("4", "pytest-benchmark JSON whose benchmark has no 'stats'; `gate`", res, verdict(res))

    # 5 ------------------------------------------------------------------------------------
    def d5(self) -> None:
        d = self.fresh("d5")
        s = sweep(d / "sweep.toml", guidance="[nan]")
        run = d / "run"
        res = self.h.cli(["run", str(s), "--run-dir", str(run), "--no-progress"], d, self.timeout)
        if "cells" in tables(run):
            cells = db_rows(run, "SELECT count(*) FROM cells")[0][0]
            samples = db_rows(run, "SELECT count(*) FROM samples")[0][0]
            orphans = db_rows(run, "SELECT count(*) FROM samples WHERE cell_id NOT IN (SELECT id FROM cells)")[0][0]
            rep = self.h.cli(["report", str(run), "--format", "md", "--out", str(d / "rep")], d, self.timeout)
            outcome = (f"exit {res.rc}; {cells} cells rows, {samples} samples rows ({orphans} pointing at no cell); "
                       f"`report`: exit {rep.rc}, \"{excerpt(rep, 'cell', 60)}\"")
        else:
            outcome = "refused when the sweep was read; no store written" if res.rc else f"exit {res.rc}, no store"
        self.row("5", "`guidance_scales = [nan]`; `run` (then `report`)", res, outcome, key="generated|nan|NaN")

        run = d / "empty"
        run.mkdir()
        (run / "run.sqlite").write_bytes(b"")
        res = self.h.cli(["run", str(self.base_sweep), "--run-dir", str(run), "--no-progress"], d, self.timeout)
        size = (run / "run.sqlite").stat().st_size
        if res.rc == 0:
            outcome = f"silently re-initialised the store ({size} bytes now): \"{generated_line(res)}\""
        else:
            outcome = f"refused, store left as it was ({size} bytes)"
        self.row("5", "0-byte run.sqlite in the run folder; `run` the sweep into it", res, outcome,
                 key="generated")

    # 6 ------------------------------------------------------------------------------------
    def score_against(self, d: Path, ref: Path, timeout: float, watch: bool = False) -> tuple[Result, dict | None]:
        run = copy_run(self.base, d / "run")
        res = self.h.cli(["score", str(run), "--reference", str(ref), "--metrics", "fad,kad", "--bootstrap", "0",
                          "--no-progress", "--cache-dir", str(d / "emb")], d, timeout, watch_memory=watch)
        manifests = sorted((run / "scores").glob("reference-*.json")) if (run / "scores").exists() else []
        manifest = json.loads(manifests[-1].read_text()) if manifests else None
        return res, manifest

    @staticmethod
    def quarantine_of(manifest: dict | None, name: str) -> str | None:
        if not manifest:
            return None
        for q in manifest.get("quarantine") or manifest.get("quarantined") or []:
            if name in json.dumps(q):
                return q.get("reason") if isinstance(q, dict) else str(q)
        return None

    def clip_outcome(self, res, manifest: dict | None, name: str, accepted, extra: str = "") -> str:
        """How `score` treated the reference file ``name``: quarantined (and why), accepted
        (``accepted(entry)`` says how), or neither."""
        reason = self.quarantine_of(manifest, name)
        entry = next((e for e in (manifest or {}).get("entries", []) if e.get("path") == name), None)
        if reason:
            return f"exit {res.rc}; quarantined: {reason}{extra}"
        if entry:
            return f"exit {res.rc}; {accepted(entry)}{extra}"
        return f"exit {res.rc}{extra}"

    def d6(self) -> None:
        d = self.fresh("d6-fifo")
        ref = reference_folder(d / "ref")
        os.mkfifo(ref / "pipe.wav")
        res, man = self.score_against(d, ref, timeout=min(60, self.timeout))
        if res.killed:
            outcome = "hung on the FIFO (" + res.killed + ")"
        else:
            reason = self.quarantine_of(man, "pipe.wav")
            outcome = f"exit {res.rc}; pipe.wav " + (f"quarantined: {reason}" if reason else "not quarantined")
        self.row("6", "FIFO `pipe.wav` in the reference folder; `score` (60 s timeout)", res, outcome,
                 key="quarantin|reference folder")

        d = self.fresh("d6-loop")
        ref = reference_folder(d / "ref", n=2)
        (ref / "loopdir").symlink_to(".")
        res, man = self.score_against(d, ref, timeout=self.timeout)
        if man:
            q = (man.get("quarantine") or [{}])[0]
            why = f": {q.get('path', '')[:12]} {q.get('reason', '')[:50]}" if q else ""
            outcome = (f"exit {res.rc}; 2 real clips counted as {man.get('n_entries')} "
                       f"({man.get('n_quarantined', 0)} quarantined{why})")
        else:
            outcome = f"exit {res.rc}; no reference manifest"
        self.row("6", "symlink loop `loopdir -> .` beside 2 clips; `score`", res, outcome,
                 key="quarantin|reference folder")

        d = self.fresh("d6-1hz")
        ref = reference_folder(d / "ref", n=2)
        with wave.open(str(ref / "onehz.wav"), "wb") as w:  # 64 KB of samples, header says 1 Hz
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(1)
            w.writeframes(os.urandom(64 * 1024))
        res, man = self.score_against(d, ref, timeout=120, watch=True)
        peak = f"peak RSS {res.peak_rss / GIB:.2f} GiB, {res.wall:.0f} s"
        if res.killed:
            outcome = f"{res.killed}"
        else:
            outcome = self.clip_outcome(res, man, "onehz.wav",
                                        lambda e: f"taken as a {e.get('duration_s'):.0f} s clip", f" ({peak})")
        self.row("6", "64 KB WAV whose header says 1 Hz; `score` (cap 4 GiB RSS, 120 s)", res, outcome,
                 key="quarantin|reference folder")

        d = self.fresh("d6-trunc")
        ref = reference_folder(d / "ref", n=2)
        write_wav(ref / "trunc.wav", 10.0, 330.0)
        raw = (ref / "trunc.wav").read_bytes()
        (ref / "trunc.wav").write_bytes(raw[: 44 + 6 * 16000 * 2])  # header still says 10 s
        res, man = self.score_against(d, ref, timeout=self.timeout)
        outcome = self.clip_outcome(res, man, "trunc.wav",
                                    lambda e: f"accepted as a {e.get('duration_s'):g} s clip, nothing flagged")
        self.row("6", "WAV truncated to 6 s of a 10 s header; `score`", res, outcome, key="quarantin|reference folder")

    # 7 ------------------------------------------------------------------------------------
    def d7(self) -> None:
        d = self.fresh("d7-steps")
        s = sweep(d / "sweep.toml", steps="[9223372036854775807]")
        run = d / "run"
        res = self.h.cli(["run", str(s), "--run-dir", str(run), "--no-progress"], d, 120, watch_memory=True)
        created = (run / "run.sqlite").exists()
        if res.killed:
            outcome = res.killed + (" (store created)" if created else "")
        elif res.rc == 0 or generated_line(res):
            outcome = f"accepted: \"{generated_line(res)}\"" + (" (store created)" if created else "")
        else:
            outcome = ("traceback" if "Traceback" in res.err else "refused") + (
                " after the store was created" if created else " when the sweep was read, no store created")
        self.row("7", "`steps = [9223372036854775807]`; `run`", res, outcome, key="generated")

        d = self.fresh("d7-ckpt")
        s = sweep(d / "sweep.toml", checkpoints='["tiny-audio", "/nonexistent/folder"]')
        run = d / "run"
        res = self.h.cli(["run", str(s), "--run-dir", str(run), "--no-progress"], d, self.timeout)
        made = len(ok_samples(run)) if "samples" in tables(run) else 0
        if (run / "run.sqlite").exists() and made:
            outcome = f"accepted; the missing folder failed only when its cell loaded, after {made} samples of tiny-audio"
        else:
            outcome = "refused when the sweep was read, nothing generated" if res.rc else f"exit {res.rc}"
        self.row("7", 'checkpoints = ["tiny-audio", "/nonexistent/folder"]; `run`', res, outcome,
                 key="nonexistent|generated")

        d = self.fresh("d7-utf8")
        s = sweep(d / "sweep.toml")
        s.write_bytes(s.read_bytes().replace(b'description', b'description').replace(b'name = "t"', b'name = "t"\ndescription = "caf\xe9"'))
        res = self.h.cli(["run", str(s), "--run-dir", str(d / "run"), "--no-progress"], d, self.timeout)
        names = str(s) in res.err or s.name in res.err
        outcome = ("traceback" if "Traceback" in res.err else f"exit {res.rc}") + (
            ", the error names the file" if names else ", the error names no file")
        self.row("7", "sweep file with a Latin-1 byte (non-UTF-8); `run`", res, outcome)

    # 8 ------------------------------------------------------------------------------------
    def d8(self) -> None:
        d = self.fresh("d8-kill")
        out = d / "merged"
        env, python = self.h.env, self.h.python
        left = "run.sqlite never appeared"
        # Kill the merge the moment its output store appears (its first moments).
        proc = subprocess.Popen([python, "-c", ENTRY, "merge", str(out), str(self.base)], cwd=d, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "run.sqlite").exists():
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.0005)
        proc.wait()
        if (out / "run.sqlite").exists():
            size = (out / "run.sqlite").stat().st_size
            left = f"SIGKILL when run.sqlite appeared: {size} bytes, tables {tables(out) or 'none'}"
        res = self.h.cli(["merge", str(out), str(self.base)], d, self.timeout)
        merged = len(ok_samples(out)) if "samples" in tables(out) else 0
        outcome = f"{left}; merge again: exit {res.rc}, {merged} samples in the output"
        self.row("8", "`merge` SIGKILLed in its first moments, then the same `merge` again", res, outcome,
                 key="merged|samples")

        d = self.fresh("d8-seeds")
        s = sweep(d / "sweep.toml", seeds="[0]")
        other = d / "run-seed0"
        # Same cell, seeds [0] only, one sample per pipeline call: each shared sample is made in
        # another batch than in the base run (seeds [0, 1], two per call).
        res = self.h.cli(["run", str(s), "--run-dir", str(other), "--no-progress", "--batch-size", "1"], d,
                         self.timeout)
        a = {p: h for p, _, h in db_rows(self.base, "SELECT prompt_id || '|' || seed, audio_path, audio_sha256 FROM samples")}
        b = {p: h for p, _, h in db_rows(other, "SELECT prompt_id || '|' || seed, audio_path, audio_sha256 FROM samples")}
        differ = sum(1 for k in b if k in a and a[k] != b[k])
        res = self.h.cli(["merge", str(d / "merged"), str(self.base), str(other)], d, self.timeout)
        if res.rc == 0:
            outcome = f"merged ({differ} shared sample(s) differ in their bits)"
        else:
            outcome = f"refused ({differ} shared sample(s) differ in their bits)"
        if differ == 0:
            outcome += "; NOT A REPRO: the shared samples are bit-identical here"
        self.row("8", "merge a run (seeds [0, 1], 2 per call) with one of seeds [0] made by `run --batch-size 1`", res, outcome,
                 key="different audio|differ in their bits")

    # 9 ------------------------------------------------------------------------------------
    def d9(self) -> None:
        d = self.fresh("d9-nul")
        prompts = d / "nul.jsonl"
        prompts.write_text(json.dumps({"id": "nul", "text": "A dog\u0000barks at night"}) + "\n")
        s = sweep(d / "sweep.toml", seeds="[0]", prompts=f'set = "{prompts}"')
        res = self.h.cli(["run", str(s), "--run-dir", str(d / "run"), "--no-progress"], d, self.timeout)
        if res.rc != 0 and not (d / "run" / "run.sqlite").exists():
            self.row("9", "prompt text with a NUL byte; `run` then `report --format html`", res,
                     "prompt refused when read")
        else:
            res = self.h.cli(["report", str(d / "run"), "--format", "html", "--out", str(d / "rep")], d, self.timeout)
            pages = [p for p in files_under(d / "rep") if p.name == "index.html"]
            if not pages:
                outcome = f"exit {res.rc}, no index.html"
            else:
                html = pages[0].read_bytes()
                i = html.find(b"A dog")
                shown = html[i: i + 30].split(b"barks")[0].decode("utf-8", "replace") if i >= 0 else "?"
                if b"\x00" in html:
                    outcome = f"raw NUL byte in index.html ({html.count(NUL)}x)"
                else:
                    outcome = f"no raw NUL in index.html; shown as {shown!r}"
            self.row("9", "prompt text with a NUL byte; `run` then `report --format html`", res, outcome)

        d = self.fresh("d9-corrupt")
        run = copy_run(self.base, d / "run")
        checkpoint_wal(run)
        for extra in ("run.sqlite-wal", "run.sqlite-shm"):
            (run / extra).unlink(missing_ok=True)
        db = bytearray((run / "run.sqlite").read_bytes())
        page = 4096
        for i in range(page + 100, min(len(db), 4 * page)):  # pages 2-4: b-tree pages, header intact
            db[i] = (i * 37) & 0xFF
        (run / "run.sqlite").write_bytes(bytes(db))
        res = self.h.cli(["report", str(run), "--format", "md", "--out", str(d / "rep")], d, self.timeout)
        text = res.err + res.out
        names = "run.sqlite" in text or str(run) in text
        outcome = ("traceback" if "Traceback" in res.err else f"exit {res.rc}") + (
            "; names the file" if names else "; names no file") + (
            "; says a way out" if re.search(r"restore|re-?run|new run folder|delete|remove|backup|copy", text, re.I)
            else "; no way out given")
        self.row("9", "run.sqlite with pages 2-4 overwritten; `report`", res, outcome, key="malformed|error")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", required=True, type=Path, help="harness checkout to test (put first on PYTHONPATH)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with the harness's dependencies")
    ap.add_argument("--only", default="", help="comma-separated defect numbers (default: all nine)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per command (default 180)")
    ap.add_argument("--mem-limit-gib", type=float, default=4.0, help="RSS at which a watched command is killed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    checkout = args.checkout.resolve()
    work = Path(tempfile.mkdtemp(prefix="robustness-replay-"))
    TMP_PREFIX[0] = str(work) + "/"
    cache = os.environ.get("AUDIOLDM2_HARNESS_CACHE") or str(work / "cache")
    h = Harness(checkout, args.python, int(args.mem_limit_gib * GIB), cache)
    where = h.which()
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"checkout {checkout} (commit {commit or '?'}); harness imported from {where}", file=sys.stderr)
    if not where.startswith(str(checkout)):
        print(f"error: harness is imported from {where}, not from {checkout}", file=sys.stderr)
        return 2
    start = time.monotonic()
    replay = Replay(h, work, args.timeout)
    try:
        replay.make_base()
        only = {s.strip() for s in args.only.split(",") if s.strip()}
        for n in range(1, 10):
            if only and str(n) not in only:
                continue
            try:
                getattr(replay, f"d{n}")()
            except Exception as err:  # a broken case must not hide the others
                replay.row(str(n), f"(case script error: {type(err).__name__})", None, str(err)[:200])
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    print(f"\nCheckout `{checkout}` at `{commit}`; {time.monotonic() - start:.0f} s.\n")
    print("| # | case | exit | printed (excerpt) | outcome |")
    print("|---|---|---|---|---|")
    for defect, case, rc, text, outcome in replay.rows:
        print(f"| {defect} | {cell(case)} | {rc} | `{cell(text).replace('`', '')}` | {cell(outcome)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
