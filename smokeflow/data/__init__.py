"""Smoke data: simulate, read and write frame layouts and videos, clip datasets, extraction, latent cache."""
