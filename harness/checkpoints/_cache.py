"""The folder where the harness keeps the checkpoints it builds, and the build-once-atomically
step shared by the tiny and the random-weight builders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from filelock import FileLock

# A build only ever appears under its final name by an atomic rename, so a folder with this file
# is complete; one without it was left half-deleted by hand and gets rebuilt.
COMPLETE_MARKER = "model_index.json"


def default_cache_dir() -> Path:
    """$AUDIOLDM2_HARNESS_CACHE, else ~/.cache/audioldm2-harness."""
    env = os.environ.get("AUDIOLDM2_HARNESS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "audioldm2-harness"


def cached_folder(
    name: str, build: Callable[[Path], object], cache_dir: Path | None = None
) -> Path:
    """Return ``<cache>/<name>``, calling ``build(tmp_folder)`` once if it is absent.

    The build writes into a temporary sibling folder that is renamed into place, under a file
    lock: concurrent callers wait for one build, and an interrupted build leaves no half folder
    behind under ``name``. A folder without the marker (left incomplete by hand) is rebuilt.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / name
    if (target / COMPLETE_MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if (target / COMPLETE_MARKER).is_file():  # another process built it meanwhile
            return target
        if target.exists():  # left incomplete by hand; the rename below needs it gone
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it 0700
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
