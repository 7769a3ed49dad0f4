"""Pixels and latents: datasets (Fashion-MNIST, Noto and Fluent emoji, image folders with class sub-folders),
class labels, the latent codecs (identity and diffusers autoencoders) with their latent caches, and image grids.

May import `workbench.core` only.
"""
