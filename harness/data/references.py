"""Reference sets: a folder of audio -> a manifest of usable clips and a quarantine report.

Every regular file under the folder (recursively; names starting with "." are ignored and
counted) is decoded with soundfile, so any format libsndfile reads works (WAV, FLAC,
OGG/Vorbis, MP3 with libsndfile >= 1.1, AIFF, ...), at any rate and channel count (channels are
averaged to mono). Links are resolved once: a file or folder reached twice (by a link, or a
link loop such as ``loopdir -> .``) is read once, and a link leaving the folder is not
followed unless ``follow_external_links``. An entry is quarantined, with its reason, when it

* is not a regular file (``not a regular file``: FIFO, socket, device; never opened, so a
  FIFO cannot hang the reader), or a link that is broken, loops or leaves the folder,
* is the same file, or the same decoded audio, as one already listed (``duplicate``),
* cannot be opened (``unreadable``, with the OS's reason) or decoded (``unreadable``: not
  audio, unsupported format),
* has a header no real clip has (``implausible header``: sample rate outside
  [1 kHz, 768 kHz], more than 64 channels, longer than an hour or more than 1 GiB decoded),
  checked before decoding so a forged header cannot make the reader allocate gigabytes,
* holds less audio than its header declares (``truncated``),
* holds no samples (``empty``),
* is shorter than ``min_duration_s`` (``too short``),
* contains NaN or infinite samples (``non-finite``),
* is digital silence, peak below 1e-4 (``silent``; unless ``allow_silent``).

Nothing is skipped silently: the manifest lists what is used (relative path, file sha256,
content sha256 of the decoded mono samples, duration, rate, channels), the quarantine lists
the rest, and both are written as JSON next to the run's scores.

Identity: the sha256 of the sorted content hashes of the used clips. Renaming, moving or
losslessly re-encoding files keeps it; adding, removing or changing any clip (or a different
``min_duration_s`` that changes which clips are used) changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

import numpy as np

from harness.errors import HarnessError
from harness.fileio import atomic_write_text
from harness.audio_checks import SILENT_PEAK
from harness.data.audio import content_sha256, read_mono

__all__ = ["QuarantinedFile", "ReferenceEntry", "ReferenceSet", "ReferenceSetError", "ingest_reference_folder"]

DEFAULT_MIN_DURATION_S = 0.5
MIN_RATE, MAX_RATE = 1_000, 768_000
MAX_CHANNELS = 64
MAX_DURATION_S = 3600.0
MAX_DECODED_BYTES = 2**30  # float32 samples of all channels, before mixing to mono


class ReferenceSetError(HarnessError, ValueError):
    """A reference set cannot be used; the message names the folder and what to do."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One usable reference clip."""

    path: str  # relative to the set's root, POSIX separators
    file_sha256: str  # of the file's bytes
    audio_sha256: str  # of the decoded mono float32 samples + rate (the embedding cache key)
    duration_s: float
    sample_rate: int
    channels: int
    frames: int


@dataclass(frozen=True)
class QuarantinedFile:
    """A file that is not used, and why."""

    path: str
    reason: str


@dataclass
class ReferenceSet:
    """The manifest and quarantine of one reference folder."""

    root: Path
    entries: list[ReferenceEntry]
    quarantine: list[QuarantinedFile]
    min_duration_s: float
    allow_silent: bool = False
    ignored_hidden: list[str] = field(default_factory=list)

    @property
    def identity(self) -> str:
        """sha256 of the sorted content hashes of the used clips."""
        return hashlib.sha256("\n".join(sorted(e.audio_sha256 for e in self.entries)).encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Manifest + quarantine as a JSON-able dict."""
        return {
            "root": str(self.root),
            "identity": self.identity,
            "min_duration_s": self.min_duration_s,
            "allow_silent": self.allow_silent,
            "n_entries": len(self.entries),
            "n_quarantined": len(self.quarantine),
            "total_duration_s": round(sum(e.duration_s for e in self.entries), 6),
            "entries": [asdict(e) for e in self.entries],
            "quarantine": [asdict(q) for q in self.quarantine],
            "ignored_hidden": self.ignored_hidden,
        }

    def write(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``to_json()`` (plus ``extra`` sections, e.g. a pairing) to ``path`` atomically; returns the path."""
        return atomic_write_text(path, json.dumps({**self.to_json(), **(extra or {})}, indent=2) + "\n")


def _check(samples: np.ndarray, rate: int, min_duration_s: float, allow_silent: bool) -> str | None:
    if samples.size == 0:
        return "empty: no samples"
    finite = np.isfinite(samples)
    if not finite.all():
        return f"non-finite: {int(samples.size - np.count_nonzero(finite))} NaN/inf sample(s)"
    duration = samples.size / rate
    if duration < min_duration_s:
        return f"too short: {duration:.3f} s < min {min_duration_s:g} s"
    peak = float(np.max(np.abs(samples)))
    if not allow_silent and peak < SILENT_PEAK:
        return f"silent: peak {peak:.3g} < {SILENT_PEAK:g}"
    return None


def ingest_reference_folder(folder: str | Path, *, min_duration_s: float = DEFAULT_MIN_DURATION_S,
                            allow_silent: bool = False, follow_external_links: bool = False) -> ReferenceSet:
    """Decode and check every file under ``folder``; see the module docstring."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ReferenceSetError(f"reference folder {folder} does not exist or is not a folder")
    if min_duration_s < 0:
        raise ReferenceSetError(f"min duration must be >= 0, got {min_duration_s}")
    entries: list[ReferenceEntry] = []
    quarantine: list[QuarantinedFile] = []
    hidden: list[str] = []
    by_audio: dict[str, str] = {}

    def reject(rel: str, reason: str) -> None:
        quarantine.append(QuarantinedFile(rel, reason))

    for rel, path in _regular_files(root, follow_external_links, reject, hidden):
        try:
            entry = _read_entry(rel, path, min_duration_s, allow_silent)
        except _Quarantined as q:
            reject(rel, str(q))
            continue
        if entry.audio_sha256 in by_audio:
            reject(rel, f"duplicate: same audio as {by_audio[entry.audio_sha256]}")
            continue
        by_audio[entry.audio_sha256] = rel
        entries.append(entry)
    entries.sort(key=lambda e: e.path)
    quarantine.sort(key=lambda q: q.path)
    return ReferenceSet(root, entries, quarantine, float(min_duration_s), allow_silent, sorted(hidden))


class _Quarantined(Exception):
    """A file that is not used; the message is the reason."""


def _regular_files(root: Path, follow_external: bool, reject: Callable[[str, str], None],
                   hidden: list[str]) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of each regular file under ``root`` once; everything else goes to ``reject``.

    Folders are walked with an explicit stack (no recursion), each real folder once: a link
    back to an ancestor is a loop, a second way into a folder already read is a duplicate.
    Within a folder, real entries come before links, so a file is listed under its own name
    rather than under a link's.
    """
    root_id = _identity(os.stat(root))
    seen_dirs: dict[tuple[int, int], str] = {root_id: "."}
    seen_files: dict[tuple[int, int], str] = {}
    stack: list[tuple[Path, PurePosixPath, tuple]] = [(root, PurePosixPath(), (root_id,))]
    while stack:
        folder, rel_dir, ancestors = stack.pop()
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        except OSError as err:
            reject(f"{rel_dir.as_posix()}/", f"unreadable folder: {err.strerror or err}")
            continue
        subfolders = []
        for entry in found:
            rel = (rel_dir / entry.name).as_posix()
            if entry.name.startswith("."):
                hidden.append(rel + "/" if entry.is_dir() else rel)
                continue
            try:
                st = _follow(entry, root, follow_external)
            except _Quarantined as q:
                reject(rel, str(q))
                continue
            key = _identity(st)
            if stat.S_ISDIR(st.st_mode):
                if key in ancestors:
                    reject(rel + "/", f"link loop: leads back to {seen_dirs[key]}/")
                elif key in seen_dirs:
                    reject(rel + "/", f"duplicate: same folder as {seen_dirs[key]}/")
                else:
                    seen_dirs[key] = rel
                    subfolders.append((Path(entry.path), PurePosixPath(rel), (*ancestors, key)))
            elif not stat.S_ISREG(st.st_mode):
                reject(rel, f"not a regular file ({_kind(st.st_mode)}); not opened")
            elif key in seen_files:
                reject(rel, f"duplicate: same file as {seen_files[key]}")
            else:
                seen_files[key] = rel
                yield rel, Path(entry.path)
        stack.extend(reversed(subfolders))


def _follow(entry: os.DirEntry, root: Path, follow_external: bool) -> os.stat_result:
    """The stat of what ``entry`` names, after its links; a broken, looping or escaping link is quarantined."""
    if entry.is_symlink():
        try:
            target = Path(entry.path).resolve(strict=True)
        except (OSError, RuntimeError) as err:  # RuntimeError: a link loop, on Python < 3.13
            reason = getattr(err, "strerror", None) or str(err)
            raise _Quarantined(f"broken link: {reason}") from None
        if not follow_external and not target.is_relative_to(root):
            raise _Quarantined(f"link leaves the reference folder (-> {target}); pass --follow-external-links "
                               "to use it")
    try:
        return os.stat(entry.path)
    except OSError as err:
        raise _Quarantined(f"unreadable: {err.strerror or err}") from None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device")]
    return next((name for test, name in kinds if test(mode)), f"mode {oct(mode)}")


def _read_entry(rel: str, path: Path, min_duration_s: float, allow_silent: bool) -> ReferenceEntry:
    """Check the header, decode and check the audio of one regular file; raises ``_Quarantined``."""
    import soundfile as sf

    try:
        # O_NONBLOCK: should a FIFO replace the file after the walk looked at it, opening it
        # returns at once instead of waiting for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise _Quarantined(f"unreadable: {type(err).__name__}: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Quarantined(f"not a regular file ({_kind(os.fstat(fd).st_mode)}); not opened")
        file_sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        try:
            f.seek(0)
            info = sf.info(f)
            problem = _header_problem(info.samplerate, info.channels, info.frames) or _truncated(info)
            if problem:
                raise _Quarantined(problem)
            f.seek(0)
            samples, rate, channels = read_mono(f)
        except _Quarantined:
            raise
        except Exception as err:  # noqa: BLE001 - every failure is reported in the quarantine
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise _Quarantined(f"unreadable: {type(err).__name__}: {first}") from None
    if samples.size < info.frames:
        raise _Quarantined(f"truncated: decoded {samples.size} of the {info.frames} frames the header declares")
    reason = _check(samples, rate, min_duration_s, allow_silent)
    if reason:
        raise _Quarantined(reason)
    return ReferenceEntry(path=rel, file_sha256=file_sha256, audio_sha256=content_sha256(samples, rate),
                          duration_s=samples.size / rate, sample_rate=rate, channels=channels,
                          frames=int(samples.size))


def _header_problem(rate: int, channels: int, frames: int) -> str | None:
    """Why a header cannot describe a real clip (None when it can), before any sample is decoded."""
    if not MIN_RATE <= rate <= MAX_RATE:
        return f"implausible header: sample rate {rate} Hz (accepted: {MIN_RATE}-{MAX_RATE} Hz)"
    if not 1 <= channels <= MAX_CHANNELS:
        return f"implausible header: {channels} channels (accepted: 1-{MAX_CHANNELS})"
    if frames / rate > MAX_DURATION_S:
        return f"implausible header: {frames / rate:.0f} s long (accepted: up to {MAX_DURATION_S:.0f} s)"
    if frames * channels * 4 > MAX_DECODED_BYTES:
        return f"implausible header: {frames * channels * 4 / 2**20:.0f} MiB decoded (accepted: up to " \
               f"{MAX_DECODED_BYTES / 2**20:.0f} MiB)"
    return None


# libsndfile notes a WAV/AIFF whose audio chunk is shorter than its header says as
# "data : 640000 (should be 383968)"; 0 and 0xFFFFFFFF are a streaming writer's "unknown size".
_CHUNK_SHORT = re.compile(r"^(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _truncated(info: Any) -> str | None:
    for match in _CHUNK_SHORT.finditer(info.extra_info or ""):
        declared, held = int(match.group(2)), int(match.group(3))
        if held < declared and declared not in (0, 0xFFFFFFFF):
            kept = info.frames / info.samplerate
            return (f"truncated: the header declares {declared} bytes of audio, the file holds {held} "
                    f"({kept:.3f} s of about {kept * declared / max(held, 1):.3f} s)")
    return None
