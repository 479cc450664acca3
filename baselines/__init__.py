"""Measured baselines: torch kernels on CPU/CUDA, and the BDWP training algorithm in torch."""
