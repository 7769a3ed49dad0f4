"""Scoring: feature extractors (TF-Inception, the Fashion-MNIST classifier), reference statistics (this project's
.safetensors with a card, published .npz files), FID/KID, precision/recall and IS, the live FID estimate, the one
evaluation function whose report every caller reads (in one process or sharded over processes, resumably), FID
during training, and the memorisation analysis. docs/evaluation.md is the reader's guide.

May import `workbench.core`, `workbench.data`, `workbench.sampling` and `workbench.training` (checkpoint loading),
and Lightning Fabric (sharded.py launches processes as training does).
"""
