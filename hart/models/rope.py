"""HART's rotary position embeddings: 1D for text tokens, a peculiar 2D layout for image tokens.

Both produce (cos, sin) tables [B, L, head_dim] in float32 that are applied with the standard
rotate-half rule, so dimension d pairs with d + head_dim/2.

Text (1D): angles pos * theta^(-2j/hd), j < hd/2, duplicated: [a_0..a_{hd/2-1}, a_0..a_{hd/2-1}].
Positions are the cumulative count of real tokens minus one (pads repeat the last position).

Image (2D): token (i, j) of an n x n scale gets float coordinates (i / n * N, j / n * N), N being the
last scale, so every scale spans the same range; both coordinates are then shifted by the position
of the last text token. With f_j = theta^(-4j/hd), j < hd/4, the table is laid out
[row*f (hd/4), row*f (hd/4), col*f (hd/4), col*f (hd/4)]. Under rotate-half the two members of a
pair therefore use *different* angles (row for the first half, column for the second). That is not
a per-axis rotation, but it is what the released weights were trained with, so it is reproduced
literally, including the float32 order of operations of the official code.
"""

import torch


def inverse_frequencies(head_dim: int, theta: float, step: int) -> torch.Tensor:
    exponents = torch.arange(0, head_dim, step, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exponents)


def text_rope(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] (integers) -> cos, sin [B, T, head_dim] float32."""
    inv_freq = inverse_frequencies(head_dim, theta, 2).to(positions.device)
    angles = positions[..., None].float() * inv_freq  # [B, T, hd/2]
    table = torch.cat((angles, angles), dim=-1)
    return table.cos(), table.sin()


def image_positions(patch_num: int, last_patch_num: int, offsets: torch.Tensor) -> torch.Tensor:
    """Float (row, column) coordinates [B, n*n, 2] of one scale, normalised to the last scale."""
    axis = torch.arange(patch_num, device=offsets.device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)  # [n, n, 2] int64
    coords = (grid / patch_num * last_patch_num).reshape(1, -1, 2)  # float32, as the official code
    return coords + offsets.reshape(-1, 1, 1)


def image_rope(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, L, 2] float (row, column) -> cos, sin [B, L, head_dim] float32."""
    inv_freq = inverse_frequencies(head_dim, theta, 4).to(positions.device)
    rows = positions[..., 0:1].float() * inv_freq  # [B, L, hd/4]
    cols = positions[..., 1:2].float() * inv_freq
    table = torch.cat((rows, rows, cols, cols), dim=-1)
    return table.cos(), table.sin()


def scale_rope(patch_nums: tuple[int, ...], scales: range | list[int], offsets: torch.Tensor, head_dim: int,
               theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The image tables of several consecutive scales, concatenated along the sequence."""
    positions = torch.cat([image_positions(patch_nums[si], patch_nums[-1], offsets) for si in scales], dim=1)
    return image_rope(positions, head_dim, theta)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] with tables [B, L, D] (cast to x's dtype, as the official code does)."""
    cos, sin = cos.to(x.dtype).unsqueeze(1), sin.to(x.dtype).unsqueeze(1)
    return x * cos + rotate_half(x) * sin
