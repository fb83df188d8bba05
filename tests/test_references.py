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
