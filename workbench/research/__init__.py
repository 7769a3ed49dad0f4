"""The layer that reproduces the paper at small scale: the zoo's families and members, reports read back from disk,
equal-compute comparisons, seed replicates, the paper's tables and findings, figures, and live experiments that
train tiny members now.

May import every other package; in `workbench` only the notebook layer (ui) imports it.
"""
