"""Atomic writes: a reader sees the old bytes or the new ones, never half; a failure leaves nothing."""

from __future__ import annotations

import hashlib

import pytest

from harness.fileio import atomic_open, atomic_write_text, sha256_file


def test_atomic_write_replaces_whole_files(tmp_path):
    target = tmp_path / "sub" / "x.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_text(target, "old")
    with pytest.raises(OSError, match="No space"):
        with atomic_open(target) as fh:
            fh.write(b"half of the new")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_sha256_file_equals_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read block
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
