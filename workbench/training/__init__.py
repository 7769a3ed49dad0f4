"""Training and checkpoints: the Lightning-Fabric loop (main -> train -> validate), self-describing checkpoints
with exact resume and safe loading, inference exports, and the plans of paper-scale runs.

May import `workbench.core`, `workbench.data` and `workbench.sampling`. Only `train` imports Lightning.
"""
