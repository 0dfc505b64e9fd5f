import numpy as np
import pytest
import torch

from hart.portable import rng
from hart.portable.sampling import filter_logits, sample_categorical
from hart.sampling import guide, sample_scale


def test_inverse_cdf_picks_where_the_cumulative_weight_crosses_u():
    logits = np.log(np.array([[0.1, 0.2, 0.7]] * 5))
    u = np.array([0.05, 0.15, 0.31, 0.99, 0.0])
    assert sample_categorical(logits, u).tolist() == [0, 1, 2, 2, 0]


def test_frequencies_follow_the_softmax():
    logits = np.array([[1.0, 0.0, -1.0, 2.0]], dtype=np.float32)
    u = rng.uniform(3, 0, 40_000)
    ids = sample_categorical(np.repeat(logits, len(u), 0), u)
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert np.abs(np.bincount(ids, minlength=4) / len(u) - expected).max() < 0.01


def test_top_k_keeps_the_k_largest_and_ties():
    z = filter_logits(np.array([[3.0, 1.0, 2.0, 2.0, 0.0]]), top_k=2, top_p=0)
    assert np.isfinite(z).tolist() == [[True, False, True, True, False]]


def test_top_p_follows_harts_ascending_rule():
    probs = np.array([[0.05, 0.15, 0.3, 0.5]])
    z = filter_logits(np.log(probs), top_k=0, top_p=0.6)
    # ascending running sums 0.05, 0.2, 0.5, 1.0; entries with sum <= 0.4 are dropped
    assert np.isfinite(z).tolist() == [[False, False, True, True]]
    only_max = filter_logits(np.log(probs), top_k=0, top_p=0.01)
    assert np.isfinite(only_max).tolist() == [[False, False, False, True]]


def test_temperature_sharpens():
    logits = np.repeat(np.array([[0.0, 1.0]], dtype=np.float32), 20_000, 0)
    u = rng.uniform(4, 0, 20_000)
    hot = (sample_categorical(logits, u, temperature=2.0) == 1).mean()
    cold = (sample_categorical(logits, u, temperature=0.5) == 1).mean()
    assert cold > 0.85 > hot


def test_candidate_columns_give_the_full_row_result():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=generator)
    u = rng.uniform(5, 0, 64)
    values, ids = logits.topk(7, dim=-1)
    full = sample_categorical(logits.numpy(), u, top_k=7, top_p=0.2)
    candidates = sample_categorical(values.numpy(), u, top_k=7, top_p=0.2, vocab_ids=ids.numpy(), vocab_size=50)
    assert np.array_equal(full, candidates)


def test_sample_scale_uses_each_images_own_stream():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 30, generator=generator)
    both = sample_scale(logits, [11, 12], 3, top_k=10, top_p=0.0, temperature=1.0)
    second = sample_scale(logits[1:], [12], 3, top_k=10, top_p=0.0, temperature=1.0)
    assert torch.equal(both.ids[1], second.ids[0])
    expected = sample_categorical(logits[0].numpy(), rng.token_uniforms([11], 3, 9)[0], top_k=10)
    assert both.ids[0].tolist() == expected.tolist()


def test_gumbel_weights_are_a_distribution_over_kept_candidates():
    logits = torch.randn(1, 4, 20, generator=torch.Generator().manual_seed(2))
    sampled = sample_scale(logits, [3], 1, top_k=5, top_p=0.0, temperature=1.0, gumbel_ratio=0.2)
    assert sampled.soft_weights.shape == (1, 4, 5) and sampled.candidates.shape == (1, 4, 5)
    assert torch.allclose(sampled.soft_weights.sum(-1), torch.ones(1, 4))
    again = sample_scale(logits, [3], 1, top_k=5, top_p=0.0, temperature=1.0, gumbel_ratio=0.2)
    assert torch.equal(sampled.soft_weights, again.soft_weights)


def test_guidance_mixes_conditional_and_unconditional_rows():
    cond, uncond = torch.ones(1, 2, 3), torch.full((1, 2, 3), 3.0)
    assert torch.equal(guide(torch.cat((cond, uncond)), 0.5), 1.5 * cond - 0.5 * uncond)
