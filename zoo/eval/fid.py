"""Distribution distances on features: the Fréchet distance (FID's formula) and the kernel distance (KID's).

FID and KID proper are defined on Inception-v3 features, which we never have offline; these functions take any
features, and reports name them by the features used ("FD[stand-in: ...]", "KD[CLIP]"), never "FID"/"KID".
Computed in float64 with symmetric eigendecompositions, so identical sets give 0 up to rounding.
"""

from __future__ import annotations

import torch


def _check(a: torch.Tensor, b: torch.Tensor, minimum: int) -> tuple[torch.Tensor, torch.Tensor]:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two feature matrices (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) < minimum:
        raise ValueError(f"need at least {minimum} samples per set, got {len(a)} and {len(b)}")
    return a.double(), b.double()


def _sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa^½ Σb Σa^½)^½) between two feature sets (N, D) and (M, D), N, M ≥ 2."""
    a, b = _check(a, b, 2)
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(sigma_a)
    cross = torch.linalg.eigvalsh(root_a @ sigma_b @ root_a).clamp(min=0).sqrt().sum()
    distance = (mu_a - mu_b).pow(2).sum() + sigma_a.trace() + sigma_b.trace() - 2 * cross
    return max(distance.item(), 0.0)


def kernel_distance(
    a: torch.Tensor, b: torch.Tensor, subsets: int = 10, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD² with KID's cubic polynomial kernel k(x, y) = (x·y / D + 1)³, averaged over random subsets.

    Each subset holds min(subset_size, N, M) samples of each set, drawn with a fixed seed.
    """
    a, b = _check(a, b, 2)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    generator = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off_diagonal = (k_xx.sum() - k_xx.trace() + k_yy.sum() - k_yy.trace()) / (m * (m - 1))
        estimates.append((off_diagonal - 2 * k_xy.mean()).item())
    return sum(estimates) / len(estimates)
