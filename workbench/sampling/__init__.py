"""The sampler: block-wise generation with the KV cache as a generator of events (one per denoising step and
per finished block), which the CLI, the app, the notebooks, evaluation and the benchmarks all consume.

May import `workbench.core` and `workbench.data`.
"""
