"""Scoring: feature extractors (TF-Inception, the Fashion-MNIST classifier), reference statistics, FID/KID and the
live FID estimate, and the one evaluation function whose report every caller reads.

May import `workbench.core`, `workbench.data`, `workbench.sampling` and `workbench.training` (checkpoint loading).
"""
