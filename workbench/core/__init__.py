"""The model and its mathematics: configuration (frozen dataclasses, presets, YAML), the transformer layers and
attention, the latent-grid/block geometry and its masks, `MADFormer` itself, the diffusion and flow-matching
objectives with their schedulers, the compute cost model, and where the repository keeps its files.

Owns every symbol of the method (N, D, T, S, z_cond). Imports nothing else of `workbench`: every other package
builds on this one.
"""
