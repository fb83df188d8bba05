"""audioldm2-harness: evaluation and benchmarking harness for AudioLDM 2 text-to-audio generation."""

__version__ = "0.1.0"
