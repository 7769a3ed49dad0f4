"""The Frechet distance between gaussians of features (Heusel et al. 2017), in float64:
FID = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr sqrt(S_a S_b).

Every covariance is held as a factor F with S = F^T F, which makes Tr sqrt(S_a S_b) the nuclear norm of F_a F_b^T:
one exact formula for a (d, d) covariance and for n < d raw features alike (FID-infinity and the bootstrap evaluate
it dozens of times per compute). The nuclear norm comes from the eigenvalues of the smaller Gram matrix (SVD is
~10x slower here); a null direction costs ~sqrt(float64 eps) of absolute accuracy, so identical singular gaussians
score ~1e-8, not 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


# ---- Frechet distance --------------------------------------------------------------------------------------------
def feature_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    x = features.double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats: need (N >= 2, F) features, got {tuple(x.shape)}. Fix: use more images.")
    return x.mean(0), torch.cov(x.T)


def _factor(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and covariance factor (N, F) of features: sigma = factor^T factor."""
    x = features.double()
    mu = x.mean(0)
    return mu, (x - mu) / (x.shape[0] - 1) ** 0.5


def _psd_factor(sigma: Tensor) -> Tensor:
    """Symmetric square root (F, F) of a covariance: a factor with sigma = factor^T factor."""
    e, v = torch.linalg.eigh(sigma.double())
    return (v * e.clamp(min=0).sqrt()) @ v.T


def _frechet(mu_a: Tensor, fac_a: Tensor, mu_b: Tensor, fac_b: Tensor) -> float:
    """FID from means and covariance factors: Tr sqrt(S_a S_b) = nuclear norm of fac_a fac_b^T."""
    m = fac_a @ fac_b.T  # (n_a, n_b)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m  # the smaller side: same non-zero eigenvalues
    tr_sqrt = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
    fid = (mu_a - mu_b).square().sum() + fac_a.square().sum() + fac_b.square().sum() - 2 * tr_sqrt
    return float(fid)


def frechet_distance(mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> float:
    """Frechet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b), in float64."""
    return _frechet(mu_a.double(), _psd_factor(sigma_a), mu_b.double(), _psd_factor(sigma_b))
