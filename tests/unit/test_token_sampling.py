import numpy as np
import torch

from hart.portable import rng
from hart.portable.sampling import filter_logits, gumbel_weights, sample_categorical
from hart.portable.spec import guide


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


def test_each_image_draws_from_its_own_stream():
    both = rng.token_uniforms([11, 12], 3, 9)
    assert np.array_equal(both[1], rng.token_uniforms([12], 3, 9)[0])
    assert np.array_equal(both[0], rng.uniform(11, rng.token_stream(3), 9))


def test_gumbel_weights_are_a_distribution_over_kept_candidates():
    logits = np.random.default_rng(2).normal(size=(4, 20)).astype(np.float32)
    filtered = filter_logits(logits, top_k=5, top_p=0.0)
    noise = rng.gumbel_uniforms([3], 1, np.broadcast_to(np.arange(20), (1, 4, 20)), 20)[0]
    weights = gumbel_weights(filtered, noise, 0.2)
    assert np.allclose(weights.sum(-1), 1) and (weights[np.isinf(filtered)] == 0).all()
    assert np.array_equal(weights, gumbel_weights(filtered, noise, 0.2))


def test_guidance_mixes_conditional_and_unconditional_rows_on_numpy_and_torch():
    cond, uncond = torch.ones(1, 2, 3), torch.full((1, 2, 3), 3.0)
    assert torch.equal(guide(torch.cat((cond, uncond)), 0.5), 1.5 * cond - 0.5 * uncond)
    mixed = guide(torch.cat((cond, uncond)).numpy(), 0.5)
    assert mixed.dtype == np.float32 and np.array_equal(mixed, (1.5 * cond - 0.5 * uncond).numpy())
