"""HART's 2D RoPE, checked against the formula written out element by element (research/hart.md §2.4)."""

import math

import pytest
import torch

from hart.models.rope import apply_rope, image_positions, image_rope, text_rope


def test_image_coordinates_are_normalised_to_the_last_scale_and_shifted():
    positions = image_positions(2, 4, torch.tensor([5, 0]))
    assert positions[0].tolist() == [[5, 5], [5, 7], [7, 5], [7, 7]]
    assert positions[1].tolist() == [[0, 0], [0, 2], [2, 0], [2, 2]]
    assert image_positions(3, 64, torch.tensor([0]))[0, 1].tolist() == pytest.approx([0.0, 64 / 3], rel=1e-6)


def test_2d_rope_rotates_pairs_with_row_and_column_angles():
    head_dim, theta = 16, 10000.0
    q = torch.randn(1, 1, 1, head_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    row, col = 3.0, 7.0
    cos, sin = image_rope(torch.tensor([[[row, col]]]), head_dim, theta)
    out = apply_rope(q, cos.double(), sin.double())[0, 0, 0]
    half, quarter = head_dim // 2, head_dim // 4
    for d in range(half):
        f = theta ** (-4 * (d % quarter) / head_dim)
        x, y = q[0, 0, 0, d].item(), q[0, 0, 0, d + half].item()
        assert math.isclose(out[d].item(), x * math.cos(row * f) - y * math.sin(row * f), abs_tol=1e-6)
        assert math.isclose(out[d + half].item(), y * math.cos(col * f) + x * math.sin(col * f), abs_tol=1e-6)


def test_1d_rope_is_the_llama_layout():
    cos, sin = text_rope(torch.tensor([[0, 1, 2, 2]]), 8, 10000.0)
    assert cos.shape == (1, 4, 8)
    assert torch.allclose(cos[0, 1], torch.tensor([math.cos(10000 ** (-2 * j / 8)) for j in range(4)] * 2))
    assert torch.equal(cos[0, 2], cos[0, 3])  # pads repeat the last position


def test_numpy_tables_match_torch():
    import numpy as np

    from hart.models.rope import inverse_frequencies
    from hart.portable import rope as portable

    offsets = torch.tensor([4, 0, 11])
    positions = image_positions(5, 8, offsets)
    assert np.array_equal(portable.image_positions(5, 8, offsets.numpy()), positions.numpy())
    for got, want in zip(portable.image_rope(positions.numpy(), inverse_frequencies(64, 1e4, 4).numpy()),
                         image_rope(positions, 64, 1e4)):
        assert np.abs(got - want.numpy()).max() <= 1e-6
    text = torch.tensor([[0, 1, 2, 2], [0, 0, 0, 0]])
    for got, want in zip(portable.text_rope(text.numpy(), inverse_frequencies(64, 1e4, 2).numpy()),
                         text_rope(text, 64, 1e4)):
        assert np.abs(got - want.numpy()).max() <= 1e-6
