"""HART's RoPE tables in numpy, for runtimes without torch (see hart/models/rope.py for the layout).

The inverse frequencies come from the export manifest (computed once by torch), so both sides
multiply the same float32 numbers; only cos/sin may differ in the last bit between libraries.
"""

import numpy as np


def text_rope(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """positions [B, T] integers, inv_freq [D/2] -> cos, sin [B, T, D] float32."""
    angles = positions[..., None].astype(np.float32) * inv_freq.astype(np.float32)
    table = np.concatenate([angles, angles], axis=-1)
    return np.cos(table), np.sin(table)


def image_positions(patch_num: int, last_patch_num: int, offsets: np.ndarray) -> np.ndarray:
    """[B, n*n, 2] float32 (row, column) of one scale: (i / n) * N, shifted by each sample's offset."""
    axis = np.arange(patch_num, dtype=np.float32)
    rows, cols = np.meshgrid(axis, axis, indexing="ij")
    grid = np.stack([rows, cols], axis=-1).reshape(1, -1, 2)
    coords = grid / np.float32(patch_num) * np.float32(last_patch_num)
    return coords + offsets.astype(np.float32).reshape(-1, 1, 1)


def image_rope(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """positions [B, L, 2], inv_freq [D/4] -> cos, sin [B, L, D] laid out [row, row, col, col]."""
    inv_freq = inv_freq.astype(np.float32)
    rows = positions[..., 0:1].astype(np.float32) * inv_freq
    cols = positions[..., 1:2].astype(np.float32) * inv_freq
    table = np.concatenate([rows, rows, cols, cols], axis=-1)
    return np.cos(table), np.sin(table)
