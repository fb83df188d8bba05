"""Device utilisation sampled while a sweep runs: NVML's GPU utilisation on CUDA, else nothing."""

from __future__ import annotations

import threading


class GpuUtilization:
    """Polls NVML GPU utilisation (percent) on a thread between ``__enter__`` and ``__exit__``."""

    def __init__(self, device: str, interval_s: float = 0.5) -> None:
        self.device, self.interval_s = device, interval_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuUtilization":
        handle = self._handle()
        if handle is not None:
            self._thread = threading.Thread(target=self._poll, args=(handle,), name="nvml-utilization", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        """Mean utilisation in percent, or None where nothing was sampled (CPU, no NVML)."""
        return sum(self.samples) / len(self.samples) if self.samples else None

    def _handle(self):
        if not self.device.startswith("cuda"):
            return None
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            return pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001 - NVML is optional: no figure rather than a wrong one
            return None

    def _poll(self, handle) -> None:
        import pynvml

        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except Exception:  # noqa: BLE001
                return
