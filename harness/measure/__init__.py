"""Measurement: trackers (latency, memory; they know nothing of AudioLDM 2), per-stage
measurement of pipeline calls, ``bench``, ``gpu-validate`` and the interleaved A/B runner."""
