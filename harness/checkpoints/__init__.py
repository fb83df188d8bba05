"""Checkpoint registry and the checkpoints the harness builds itself."""
