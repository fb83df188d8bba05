"""Device utilisation sampled while a sweep runs: NVML's GPU utilisation on CUDA, else nothing."""

from __future__ import annotations

import threading


class GpuUtilization:
    """Polls NVML GPU utilisation (percent) on a thread between ``__enter__`` and ``__exit__``,
    and once more at exit, so a sweep shorter than one interval still gets a figure."""

    def __init__(self, device: str, interval_s: float = 0.5) -> None:
        self.device, self.interval_s = device, interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = None

    def __enter__(self) -> "GpuUtilization":
        self._read = _reader(self.device)
        if self._read is not None:
            self._thread = threading.Thread(target=self._poll, name="nvml-utilization", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()

    def mean(self) -> float | None:
        """Mean utilisation in percent, or None where nothing was sampled (CPU, no NVML)."""
        return sum(self.samples) / len(self.samples) if self.samples else None

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample():
                return

    def _sample(self) -> bool:
        try:
            self.samples.append(float(self._read()))
            return True
        except Exception:  # noqa: BLE001 - NVML is optional: no figure rather than a wrong one
            return False


def _reader(device: str):
    """A callable returning ``device``'s utilisation, or None without CUDA or NVML. torch's helper
    maps torch's device index to NVML's through CUDA_VISIBLE_DEVICES (by index or UUID)."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        torch.cuda.utilization(device)
    except Exception:  # noqa: BLE001
        return None
    return lambda: torch.cuda.utilization(device)
