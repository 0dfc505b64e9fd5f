"""The Fréchet distance between two feature sets, and the ghost share of flat scenes (PSNR is
hart.portable.metrics.psnr)."""

import numpy as np
import torch
import torch.nn.functional as F

GHOST_LEVEL, OBJECT_LEVEL, OBJECT_MARGIN = 0.04, 0.25, 3  # in [0, 1] units; pixels at the image's size


def ghost_share(images: torch.Tensor) -> float:
    """Mean share of background pixels (more than OBJECT_MARGIN px from any pixel that differs from the
    image's median color by > OBJECT_LEVEL) that differ from it by > GHOST_LEVEL: faint marks, such as
    ghost outlines, on a flat background. images [B, 3, H, W] in [0, 1] -> a share in [0, 1]."""
    x = torch.as_tensor(images, dtype=torch.float32)
    background = x.flatten(2).median(dim=2).values[..., None, None]  # [B, 3, 1, 1]
    deviation = (x - background).abs().amax(dim=1, keepdim=True)  # [B, 1, H, W]
    size = 2 * OBJECT_MARGIN + 1
    near = F.max_pool2d((deviation > OBJECT_LEVEL).float(), size, stride=1, padding=OBJECT_MARGIN) > 0
    far = ~near
    marked = ((deviation > GHOST_LEVEL) & far).flatten(1).sum(1) / far.flatten(1).sum(1).clamp(min=1)
    return float(marked.mean())


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
