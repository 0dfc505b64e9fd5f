"""Image metrics of the evaluator: PSNR and the Fréchet distance between two feature sets."""

import numpy as np
import torch


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of images in [0, 1] ([B, 3, H, W] each)."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of features [N, D] and [M, D].

    The matrix square roots come from symmetric eigendecompositions, which stay real and stable
    even when there are fewer samples than feature dimensions.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
