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


def test_approximations_are_deterministic_and_batch_exact(pipe):
    one = [pipe.loop.generate([p], seed=7 + i, approximate=FAST) for i, p in enumerate(PROMPTS)]
    both = pipe.loop.generate(PROMPTS, seed=7, approximate=FAST)
    for i, alone in enumerate(one):
        assert all(np.array_equal(a[0], b[i]) for a, b in zip(alone.ids, both.ids))
        assert np.allclose(alone.images[0], both.images[i], atol=1e-5)


@pytest.mark.parametrize("approximate, message", [
    (Approximations(unguided_scales=4), "unguided scales must be 0 to 3 for a model of 4 scales (got 4)"),
    (Approximations(unguided_scales=-1), "unguided scales must be 0 to 3"),
    (Approximations(residual_steps=0), "residual steps must be 1 to 1000"),
])
def test_impossible_settings_are_one_sentence(pipe, approximate, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        pipe.loop.generate(PROMPTS, approximate=approximate)


def test_the_variants_start_exact_and_name_themselves():
    assert VARIANTS[0] == EXACT and EXACT.exact and EXACT.describe() == "exact"
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)
    assert not FAST.exact and "guidance" in FAST.describe()
