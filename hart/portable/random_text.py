"""Seeded random text features: the stand-in for a text encoder in random-weight timing runs.

Prompt p gets normal features from the portable RNG seeded with the first 8 bytes (little-endian) of
sha256(p), and a mask marking (number of words + 1) tokens real, so every backend sees the same input.
"""

import hashlib

import numpy as np

from hart.portable import rng
from hart.portable.words import check_prompts


def random_text_features(prompts: list[str], tokens: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """-> features [B, T, D] float32 and mask [B, T] bool."""
    hidden, masks = [], []
    for prompt in check_prompts(prompts):
        seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
        hidden.append(rng.normal(seed, 0, tokens * dim).reshape(tokens, dim))
        masks.append(np.arange(tokens) < min(len(prompt.split()) + 1, tokens))
    return np.stack(hidden), np.stack(masks)
