"""Metrics: per-frame metrics, FVD, smoke statistics, baselines."""
