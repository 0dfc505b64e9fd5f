"""PSNR, once for every caller (export parity, benchmarks, evaluation, tokenizer training); numpy only."""

import numpy as np

PSNR_CAP = 100.0  # identical images report this instead of infinity


def psnr(images, reference, cap: float = PSNR_CAP) -> np.ndarray:
    """PSNR in dB per image [B] of images in [0, 1] ([B, ...] each, any array numpy reads), in float64."""
    a = np.asarray(images, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    mse = ((a - b) ** 2).reshape(a.shape[0], -1).mean(1)
    with np.errstate(divide="ignore"):
        return np.minimum(cap, 10 * np.log10(1 / mse))
