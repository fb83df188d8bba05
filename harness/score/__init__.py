"""Scoring: embedders (registry), metrics, scoring of run folders, paired comparison of cells."""
