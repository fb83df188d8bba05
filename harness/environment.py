"""Versions and machine facts: what goes into cell ids, what every run records, and the one rule
for when two recorded environments count as the same (used by merge, baseline and gate).

torch is imported only inside the functions that ask the device, so reading recorded
environments (report, gate, merge) does not load it."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

# Packages whose version can change generated audio: part of every cell id.
OUTPUT_PACKAGES = ("audioldm2-harness", "diffusers", "transformers", "torch")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        if package == "audioldm2-harness":  # running from a source tree without installing
            from harness import __version__

            return __version__
        return "not-installed"


@functools.lru_cache(maxsize=1)
def output_versions() -> dict[str, str]:
    """Versions of the packages that change outputs (harness, diffusers, transformers, torch)."""
    return {p: _version(p) for p in OUTPUT_PACKAGES}


def resolve_device(device: str) -> str:
    """Turn 'auto' into 'cuda' when a GPU is visible, else 'cpu'; check explicit CUDA requests."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA GPU is visible; use device = 'cpu'")
    return device


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def fingerprint() -> dict[str, object]:
    """Environment fingerprint stored with every run: versions, CPU, GPU, git commit."""
    import torch

    info: dict[str, object] = {
        "versions": {**output_versions(), "numpy": _version("numpy"), "python": platform.python_version()},
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "git_commit": _git_commit(),
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),  # set by a sweep's threads or --threads
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda_version"] = torch.version.cuda
        info["driver_version"] = _driver_version()
    return info


def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows (often just the arch)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:  # noqa: BLE001 - NVML is optional; no figure rather than a wrong one
        return None


# The packages whose versions a gate compares: those that change speed or outputs of the model.
GATE_PACKAGES = ("torch", "diffusers", "transformers")


def environment_key(env: dict[str, Any] | None, *, packages: Sequence[str] | None = GATE_PACKAGES,
                    commit: bool = False, cpu_model: bool = True) -> dict[str, Any]:
    """What must agree for figures from two recorded environments to be comparable.

    ``device``: the GPU model, else ``cpu:<model>`` (``cpu`` alone with ``cpu_model=False``);
    the versions of ``packages`` (None: every recorded package); the git commit if ``commit``.
    """
    env = env or {}
    versions = env.get("versions") or {}
    cpu = f"cpu:{env.get('cpu', '?')}" if cpu_model else "cpu"
    key: dict[str, Any] = {"device": env.get("gpu") or ("cuda" if env.get("cuda_available") else cpu)}
    key.update({p: versions.get(p) for p in (sorted(versions) if packages is None else packages)})
    if commit:
        key["git commit"] = env.get("git_commit")
    return key


def environment_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """'name: a != b' for every entry of two environment keys that differs."""
    return [f"{k}: {a.get(k)} != {b.get(k)}" for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
