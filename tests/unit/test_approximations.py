"""Opt-in approximations (hart.approximations): what they keep exact, what they change, how they refuse."""

import re

import numpy as np
import pytest

from hart.approximations import EXACT, FAST, VARIANTS, Approximations
from hart.errors import ConfigError
from hart.pipeline import HARTPipeline

PROMPTS = ["a red circle on a blue background", "a small green square"]


@pytest.fixture
def pipe(model):
    return HARTPipeline(model, device="cpu")


def test_without_guidance_the_unguided_rows_give_the_guided_loops_tokens(pipe):
    """cfg 0 weighs the unconditional rows by zero, so dropping them (the approximation at its widest)
    changes no token: the conditional rows never read the unconditional ones."""
    num_scales = pipe.config.num_scales
    want = pipe.loop.generate(PROMPTS, seed=4, cfg=0.0)
    got = pipe.loop.generate(PROMPTS, seed=4, cfg=0.0, approximate=Approximations(unguided_scales=num_scales - 1))
    assert all(np.array_equal(a, b) for a, b in zip(want.ids, got.ids))
    assert np.allclose(want.images, got.images, atol=1e-5)


def test_unguided_scales_change_only_the_last_scales(pipe):
    want = pipe.loop.generate(PROMPTS, seed=1, cfg=4.0)
    got = pipe.loop.generate(PROMPTS, seed=1, cfg=4.0, approximate=Approximations(unguided_scales=1))
    assert all(np.array_equal(a, b) for a, b in zip(want.ids[:-1], got.ids[:-1]))  # guided as before
    assert not np.array_equal(want.ids[-1], got.ids[-1])  # the last scale sampled from cond logits alone
    assert got.images.shape == want.images.shape


def test_the_models_own_residual_steps_are_exact_and_fewer_change_only_the_residual(pipe):
    steps = pipe.config.residual_head.sampling_steps
    want = pipe.loop.generate(PROMPTS, seed=2)
    same = pipe.loop.generate(PROMPTS, seed=2, approximate=Approximations(residual_steps=steps))
    assert np.array_equal(want.images, same.images)
    fewer = pipe.loop.generate(PROMPTS, seed=2, approximate=Approximations(residual_steps=2))
    assert all(np.array_equal(a, b) for a, b in zip(want.ids, fewer.ids))
    assert not np.allclose(want.residual, fewer.residual)


@pytest.mark.parametrize("approximate", [FAST, Approximations(unguided_scales=2, pruned_scales=2, prune_ratio=0.6)])
def test_approximations_are_deterministic_and_batch_exact(pipe, approximate):
    one = [pipe.loop.generate([p], seed=7 + i, approximate=approximate) for i, p in enumerate(PROMPTS)]
    both = pipe.loop.generate(PROMPTS, seed=7, approximate=approximate)
    for i, alone in enumerate(one):
        assert all(np.array_equal(a[0], b[i]) for a, b in zip(alone.ids, both.ids))
        assert np.allclose(alone.images[0], both.images[i], atol=1e-5)


@pytest.mark.parametrize("approximate, message", [
    (Approximations(unguided_scales=4), "unguided scales must be 0 to 3 for a model of 4 scales (got 4)"),
    (Approximations(unguided_scales=-1), "unguided scales must be 0 to 3"),
    (Approximations(residual_steps=0), "residual steps must be 1 to 1000"),
    (Approximations(pruned_scales=3), "pruned scales must be 0 to 2 for a model of 4 scales (got 3)"),
    (Approximations(pruned_scales=1, prune_ratio=1.0), "the prune ratio (the share of a scale's tokens skipped) "
                                                        "must be between 0 and 1 (got 1.0)"),
])
def test_impossible_settings_are_one_sentence(pipe, approximate, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipe.loop.generate(PROMPTS, approximate=approximate)


def test_the_variants_start_exact_and_name_themselves():
    assert VARIANTS[0] == EXACT and EXACT.exact and EXACT.describe() == "exact"
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)
    assert not FAST.exact and "guidance" in FAST.describe()


def test_pruning_that_drops_no_token_is_the_exact_loop_bit_for_bit(pipe):
    """A ratio below one token of the largest scale keeps every token: the gathers, the scatter and the
    cache offsets of the pruned path then reproduce the plain step exactly."""
    smallest = pipe.config.patch_nums[-2] ** 2
    tiny = Approximations(pruned_scales=2, prune_ratio=0.5 / pipe.config.patch_nums[-1] ** 2)
    assert int(smallest * tiny.prune_ratio) == 0
    want = pipe.loop.generate(PROMPTS, seed=3)
    got = pipe.loop.generate(PROMPTS, seed=3, approximate=tiny)
    assert all(np.array_equal(a, b) for a, b in zip(want.ids, got.ids))
    assert np.array_equal(want.images, got.images)


def test_pruning_changes_only_the_pruned_scales_and_packs_the_cache(pipe):
    """The scales before the pruned ones sample exactly as before; the pruned ones leave their pruned
    tokens' cache positions free (later scales write right after the kept tokens), and each scale keeps
    n*n - floor(n*n * ratio) tokens."""
    config, prune = pipe.config, Approximations(pruned_scales=2, prune_ratio=0.5)
    want = pipe.loop.generate(PROMPTS, seed=5, cfg=4.0)
    got = pipe.loop.generate(PROMPTS, seed=5, cfg=4.0, approximate=prune)
    first = prune.first_pruned(config.num_scales)
    assert all(np.array_equal(a, b) for a, b in zip(want.ids[:first], got.ids[:first]))
    assert not all(np.array_equal(a, b) for a, b in zip(want.ids[first:], got.ids[first:]))
    skipped = sum(int(n * n * 0.5) for n in config.patch_nums[first:])
    assert pipe.loop.backend.pruned == skipped
    end = pipe.loop.backend.schedule.sequence_length - skipped  # what was written, packed
    assert all(k[:, :, end:].abs().sum() == 0 for k in pipe.loop.backend.cache.keys)
    assert all(k[:, :, end - 1].abs().sum() > 0 for k in pipe.loop.backend.cache.keys)


def test_pivotal_tokens_and_their_restoration():
    """The kept tokens are the ones furthest from their row's mean, in raster order; the restored grid holds
    them where they were and the previous scale's states, upsampled, everywhere else."""
    import torch
    import torch.nn.functional as F

    from hart.models.pruning import pivotal_tokens, restore, take_tokens

    x = torch.zeros(2, 9, 3)
    x[0, [7, 2], 0] = torch.tensor([5.0, 3.0])
    x[1, 4, 1] = -4.0
    x[1, 0, 2] = 2.0
    index = pivotal_tokens(x, 2)
    assert index.tolist() == [[2, 7], [0, 4]]
    assert torch.equal(take_tokens(x, index)[0, 1], x[0, 7])
    previous = torch.randn(2, 4, 3)
    own = torch.randn(2, 2, 3)
    grid = restore(previous, 3, index, own)
    upsampled = F.interpolate(previous.transpose(1, 2).reshape(2, 3, 2, 2), size=(3, 3), mode="bilinear",
                              align_corners=False).flatten(2).transpose(1, 2)
    assert torch.equal(grid[0, [2, 7]], own[0]) and torch.equal(grid[1, [0, 4]], own[1])
    others = [i for i in range(9) if i not in (2, 7)]
    assert torch.equal(grid[0, others], upsampled[0, others])
