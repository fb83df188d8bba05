"""Reference-set ingestion (manifest + quarantine) and the synthetic reference generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from scipy.io import wavfile

from harness.data.references import ReferenceSetError, ingest_reference_folder
from harness.data.synthetic import KINDS, synthetic_clips, write_synthetic_reference


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_manifest_lists_good_files_and_quarantine_gives_each_bad_file_a_reason(tmp_path):
    ref = tmp_path / "ref"
    (ref / "sub").mkdir(parents=True)
    wavfile.write(ref / "mono16k.wav", 16000, _tone(1.0, 16000))
    stereo = np.stack([_tone(1.5, 44100), 0.5 * _tone(1.5, 44100)], axis=1)
    sf.write(ref / "sub" / "stereo44k.flac", stereo, 44100)
    (ref / "notes.txt").write_text("not audio")
    wavfile.write(ref / "empty.wav", 16000, np.zeros(0, np.float32))
    wavfile.write(ref / "short.wav", 16000, _tone(0.1, 16000))
    nan = _tone(1.0, 16000)
    nan[[10, 20]] = np.nan
    wavfile.write(ref / "nan.wav", 16000, nan)
    wavfile.write(ref / "silent.wav", 16000, np.zeros(16000, np.float32))
    (ref / "truncated.wav").write_bytes((ref / "mono16k.wav").read_bytes()[:30])
    (ref / ".DS_Store").write_bytes(b"\0\1")

    refset = ingest_reference_folder(ref, min_duration_s=0.5)
    assert [e.path for e in refset.entries] == ["mono16k.wav", "sub/stereo44k.flac"]
    flac = refset.entries[1]
    assert (flac.sample_rate, flac.channels, flac.frames) == (44100, 2, int(1.5 * 44100))
    assert flac.duration_s == pytest.approx(1.5)
    reasons = {q.path: q.reason for q in refset.quarantine}
    assert set(reasons) == {"notes.txt", "empty.wav", "short.wav", "nan.wav", "silent.wav", "truncated.wav"}
    assert reasons["notes.txt"].startswith("unreadable:")
    assert reasons["truncated.wav"].startswith("unreadable:")
    assert reasons["empty.wav"].startswith("empty")
    assert reasons["short.wav"] == "too short: 0.100 s < min 0.5 s"
    assert reasons["nan.wav"] == "non-finite: 2 NaN/inf sample(s)"
    assert reasons["silent.wav"].startswith("silent")
    assert refset.ignored_hidden == [".DS_Store"]
    assert "silent.wav" in {e.path for e in ingest_reference_folder(ref, allow_silent=True).entries}

    written = json.loads(refset.write(tmp_path / "scores" / "reference.json").read_text())
    assert written["identity"] == refset.identity and written["n_quarantined"] == 6
    assert {q["path"] for q in written["quarantine"]} == set(reasons)
    fields = {"path", "file_sha256", "audio_sha256", "duration_s", "sample_rate", "channels"}
    assert fields <= set(written["entries"][0])


def test_identity_follows_content_not_names(tmp_path):
    write_synthetic_reference(tmp_path / "a", 4)
    first = ingest_reference_folder(tmp_path / "a")
    (tmp_path / "a" / "tone_000.wav").rename(tmp_path / "a" / "renamed.wav")
    assert ingest_reference_folder(tmp_path / "a").identity == first.identity
    sr, data = wavfile.read(tmp_path / "a" / "renamed.wav")
    wavfile.write(tmp_path / "a" / "renamed.wav", sr, data * np.float32(0.5))
    assert ingest_reference_folder(tmp_path / "a").identity != first.identity


def test_missing_folder_is_a_reference_error(tmp_path):
    with pytest.raises(ReferenceSetError, match="does not exist"):
        ingest_reference_folder(tmp_path / "nope")


def test_synthetic_reference_is_deterministic_and_well_formed(tmp_path):
    paths = write_synthetic_reference(tmp_path / "x", 8, seed=3)
    again = write_synthetic_reference(tmp_path / "y", 8, seed=3)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    assert [p.name for p in paths[:4]] == [f"{k}_{i:03d}.wav" for i, k in enumerate(KINDS)]
    other = dict(synthetic_clips(8, seed=4))
    assert not np.array_equal(other["tone_000"], wavfile.read(paths[0])[1])
    # Clip i depends only on (seed, i): a larger set extends a smaller one.
    assert np.array_equal(dict(synthetic_clips(12, seed=3))["clicks_007"], wavfile.read(paths[7])[1])
    for p in paths:
        rate, clip = wavfile.read(p)
        assert rate == 16000 and clip.dtype == np.float32 and clip.size == 16000
        assert 0.2 - 1e-6 <= np.abs(clip).max() <= 0.6 + 1e-6
    assert len(ingest_reference_folder(tmp_path / "x").entries) == 8


# --- hostile folders (issue 17): special files, links, forged headers, truncation -----------------

def _pair(ref):
    ref.mkdir(parents=True, exist_ok=True)
    sf.write(ref / "a.wav", _tone(1.0, 16000), 16000, subtype="FLOAT")
    sf.write(ref / "b.wav", 0.5 * _tone(1.2, 16000), 16000, subtype="FLOAT")


def _forge_fmt(path, **fields):
    """Rewrite fields of a WAV's fmt chunk in place (channels, rate, byte_rate)."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.index(b"fmt ") + 8
    offsets = {"channels": (2, "<H"), "rate": (4, "<I"), "byte_rate": (8, "<I")}
    for name, value in fields.items():
        offset, fmt = offsets[name]
        struct.pack_into(fmt, data, at + offset, value)
    path.write_bytes(bytes(data))


def _ingest_in_subprocess(ref, **kwargs):
    """Ingest in a child process with a timeout: a reader that hangs (FIFO, /dev/zero) fails the test, not the suite."""
    import os
    import subprocess
    import sys
    from types import SimpleNamespace

    code = ("import json, sys; from harness.data.references import ingest_reference_folder as f; "
            f"r = f(sys.argv[1], **{kwargs!r}); "
            "print(json.dumps([[e.path for e in r.entries], [[q.path, q.reason] for q in r.quarantine]]))")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(ref)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    except subprocess.TimeoutExpired:
        pytest.fail("ingesting the reference folder hung")
    assert done.returncode == 0, done.stderr
    entries, quarantine = json.loads(done.stdout)
    return SimpleNamespace(entries=[SimpleNamespace(path=p) for p in entries],
                           quarantine=[SimpleNamespace(path=p, reason=r) for p, r in quarantine])


def test_special_files_are_quarantined_without_being_opened(tmp_path):
    import os
    import socket

    ref = tmp_path / "ref"
    _pair(ref)
    os.mkfifo(ref / "pipe.wav")  # opening it for reading would wait for a writer forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(ref / "sock.wav"))
    try:
        refset = _ingest_in_subprocess(ref)
    finally:
        sock.close()
    assert [e.path for e in refset.entries] == ["a.wav", "b.wav"]
    reasons = {q.path: q.reason for q in refset.quarantine}
    assert reasons == {"pipe.wav": "not a regular file (FIFO); not opened",
                       "sock.wav": "not a regular file (socket); not opened"}


def test_links_are_resolved_once_loops_and_duplicates_counted_once(tmp_path):
    import os

    ref = tmp_path / "ref"
    _pair(ref)
    (ref / "sub").mkdir()
    sf.write(ref / "sub" / "c.wav", 0.7 * _tone(1.5, 16000), 16000, subtype="FLOAT")
    os.symlink(".", ref / "loopdir")  # the case: 2 clips were counted as 82
    os.symlink("..", ref / "sub" / "up")
    os.symlink("sub", ref / "alias")
    os.symlink("a.wav", ref / "a_link.wav")
    os.link(ref / "b.wav", ref / "b_hard.wav")
    (ref / "a_copy.wav").write_bytes((ref / "a.wav").read_bytes())
    os.symlink("missing.wav", ref / "broken.wav")
    alone = ingest_reference_folder(tmp_path / "ref")
    assert [e.path for e in alone.entries] == ["a.wav", "b.wav", "sub/c.wav"]
    reasons = {q.path: q.reason for q in alone.quarantine}
    assert reasons == {
        "loopdir/": "link loop: leads back to ./",
        "sub/up/": "link loop: leads back to ./",
        "alias/": "duplicate: same folder as sub/",
        "a_link.wav": "duplicate: same file as a.wav",
        "b_hard.wav": "duplicate: same file as b.wav",
        "a_copy.wav": "duplicate: same audio as a.wav",
        "broken.wav": reasons["broken.wav"],
    }
    assert reasons["broken.wav"].startswith("broken link: ")
    # the identity is that of the three distinct clips
    clean = tmp_path / "clean"
    _pair(clean)
    (clean / "c.wav").write_bytes((ref / "sub" / "c.wav").read_bytes())
    assert ingest_reference_folder(clean).identity == alone.identity


def test_links_leaving_the_folder_need_follow_external_links(tmp_path):
    import os

    ref, outside = tmp_path / "ref", tmp_path / "outside"
    _pair(ref)
    outside.mkdir()
    sf.write(outside / "x.wav", 0.2 * _tone(2.0, 16000), 16000, subtype="FLOAT")
    os.symlink(outside / "x.wav", ref / "x.wav")
    os.symlink(outside, ref / "more")
    os.symlink("/dev/zero", ref / "zero.wav")
    default = ingest_reference_folder(ref)
    assert [e.path for e in default.entries] == ["a.wav", "b.wav"]
    reasons = {q.path: q.reason for q in default.quarantine}
    assert set(reasons) == {"x.wav", "more", "zero.wav"}
    assert all("leaves the reference folder" in r and "--follow-external-links" in r for r in reasons.values())
    followed = _ingest_in_subprocess(ref, follow_external_links=True)
    # a folder's files are read before its subfolders: x.wav is listed, the folder's copy is the duplicate
    assert [e.path for e in followed.entries] == ["a.wav", "b.wav", "x.wav"]
    assert {q.path: q.reason for q in followed.quarantine} == {
        "more/x.wav": "duplicate: same file as x.wav",
        "zero.wav": "not a regular file (character device); not opened"}


@pytest.mark.parametrize("fields, reason", [
    ({"rate": 1, "byte_rate": 4}, "implausible header: sample rate 1 Hz (accepted: 1000-768000 Hz)"),
    ({"rate": 4_000_000, "byte_rate": 16_000_000}, "implausible header: sample rate 4000000 Hz"),
    ({"channels": 200}, "implausible header: 200 channels (accepted: 1-64)"),
])
def test_implausible_headers_are_refused_before_decoding(tmp_path, monkeypatch, fields, reason):
    import harness.data.references as references

    ref = tmp_path / "ref"
    _pair(ref)
    sf.write(ref / "forged.wav", _tone(4.0, 16000), 16000, subtype="PCM_32")  # 256 KB, no PEAK chunk
    _forge_fmt(ref / "forged.wav", **fields)
    decoded = []
    real = references.read_mono
    monkeypatch.setattr(references, "read_mono", lambda f: decoded.append(f.name) or real(f))
    refset = ingest_reference_folder(ref)
    (q,) = refset.quarantine
    assert q.path == "forged.wav" and q.reason.startswith(reason)
    assert len(decoded) == 2 and not any("forged" in str(name) for name in decoded)


def test_header_limits_duration_and_memory():
    from harness.data.references import _header_problem

    assert _header_problem(16000, 1, 16000 * 3600) is None
    assert "3601 s long" in _header_problem(16000, 1, 16000 * 3601)
    assert "MiB decoded" in _header_problem(192000, 64, 192000 * 60)


def test_a_truncated_wav_is_quarantined_not_taken_as_shorter(tmp_path):
    ref = tmp_path / "ref"
    _pair(ref)
    for subtype in ("FLOAT", "PCM_16"):
        sf.write(ref / "ten.wav", _tone(10.0, 16000), 16000, subtype=subtype)
        data = (ref / "ten.wav").read_bytes()
        (ref / "ten.wav").write_bytes(data[: len(data) * 6 // 10])
        refset = ingest_reference_folder(ref)
        assert [e.path for e in refset.entries] == ["a.wav", "b.wav"]
        (q,) = refset.quarantine
        assert q.path == "ten.wav" and q.reason.startswith("truncated: the header declares")
        assert "s of about 10.000 s)" in q.reason


def test_an_unopenable_file_gives_the_os_reason_not_system_error(tmp_path, monkeypatch):
    import errno
    import os

    ref = tmp_path / "ref"
    _pair(ref)
    sf.write(ref / "locked.wav", _tone(1.0, 16000), 16000)
    real_open = os.open

    def deny(path, *args, **kwargs):  # root ignores file modes, so the refusal is simulated
        if str(path).endswith("locked.wav"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    refset = ingest_reference_folder(ref)
    assert [(q.path, q.reason) for q in refset.quarantine] == [
        ("locked.wav", "unreadable: PermissionError: Permission denied")]


@pytest.mark.parametrize("flag, expected", [([], False), (["--follow-external-links"], True)])
def test_score_passes_follow_external_links_to_ingestion(tmp_path, monkeypatch, capsys, flag, expected):
    import harness.score.reference as reference
    from harness.cli import main
    from harness.data.references import ReferenceSetError
    from harness.store import RunStore

    RunStore(tmp_path / "run").close()
    seen = {}

    def fake_ingest(folder, **kwargs):
        seen.update(kwargs)
        raise ReferenceSetError("stop here")

    monkeypatch.setattr(reference, "ingest_reference_folder", fake_ingest)
    assert main(["score", str(tmp_path / "run"), "--reference", str(tmp_path), "--no-progress", *flag]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen["follow_external_links"] is expected


def test_reference_synth_command_writes_the_documented_set(tmp_path, capsys):
    """`reference synth DIR` writes the same files as write_synthetic_reference, readable as a reference."""
    from harness.cli import main
    from harness.data.synthetic import write_synthetic_reference

    assert main(["reference", "synth", str(tmp_path / "cli"), "--n", "6", "--seed", "3", "--duration", "0.5"]) == 0
    assert "wrote 6 synthetic clips" in capsys.readouterr().out
    expected = write_synthetic_reference(tmp_path / "api", 6, seed=3, duration_s=0.5)
    written = sorted((tmp_path / "cli").glob("*.wav"))
    assert [p.name for p in written] == sorted(p.name for p in expected)
    assert all(p.read_bytes() == (tmp_path / "api" / p.name).read_bytes() for p in written)
    assert main(["reference", "synth", str(tmp_path / "bad"), "--n", "0"]) == 2
