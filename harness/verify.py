"""``audioldm2-harness verify RUN``: is a run folder whole?

Checks, without writing anything: the database reads and passes SQLite's ``quick_check``; every
sample row's cell is recorded; every ``ok`` sample's audio path lies inside the run folder's
``audio/`` folder and the file there is a regular file whose sha256 is the recorded one.
Audio files that no row names (left by an interrupted write or merge, harmless) are counted.
``run`` regenerates samples whose file is missing or changed; ``score``, ``compare``, ``merge``
and ``report`` refuse to use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.store import DATABASE, audio_problems, read_store, sample_key

__all__ = ["VerifyResult", "verify_run"]


@dataclass
class VerifyResult:
    """What ``verify_run`` found."""

    root: Path
    samples: int = 0  # sample rows
    checked: int = 0  # ok samples whose audio file was checked
    problems: list[str] = field(default_factory=list)
    unreferenced: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def verify_run(run_dir: str | Path, progress: bool = False) -> VerifyResult:
    """Check a run folder's database and stored audio; see the module docstring."""
    result = VerifyResult(Path(run_dir))
    with read_store(run_dir) as store:
        lines = [r[0] for r in store.db.execute("PRAGMA quick_check")]
        if lines != ["ok"]:
            result.problems += [f"{store.root / DATABASE}: {line}" for line in lines[:5]]
        cells = {r[0] for r in store.db.execute("SELECT id FROM cells")}
        rows = [dict(r) for r in store.db.execute("SELECT * FROM samples ORDER BY cell_id, prompt_id, seed")]
    result.samples = len(rows)
    result.problems += [f"{sample_key(r)}: its cell {r['cell_id']} is not recorded" for r in rows
                        if r["cell_id"] not in cells]
    ok = [r for r in rows if r["status"] == "ok"]
    from tqdm.auto import tqdm

    bar = tqdm(ok, desc="verifying", unit="file", disable=not progress, dynamic_ncols=True)
    bad = audio_problems(result.root, bar, refuse_outside=False)
    result.problems += [f"{sample_key(r)}: {problem}" for r, problem in bad]
    result.checked = len(ok)
    referenced = {Path(r["audio_path"]).as_posix() for r in rows if r["audio_path"]}
    audio = result.root / "audio"
    result.unreferenced = sorted(p for p in audio.rglob("*") if p.is_file()
                                 and p.relative_to(result.root).as_posix() not in referenced) if audio.is_dir() else []
    return result
