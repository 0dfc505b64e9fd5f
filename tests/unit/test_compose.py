"""Two-object composition (hart.portable.compose + GenerationLoop): the plan, the border, and that a composed
image is exactly its two one-object passes joined."""

import numpy as np
import pytest

from hart.backend import ForcedTokens
from hart.pipeline import HARTPipeline
from hart.portable import compose, grammar, rng

PLACED = "a small red circle in the top left corner and a large blue square on the right on a yellow background"
UNPLACED = "a red circle and a blue box on a gray background"
BARE = "a small green star in the top left and a yellow square in the bottom right"  # no background named
ONE = "a large red circle on a blue background"


@pytest.fixture(scope="module")
def pipe():
    return HARTPipeline.from_pretrained("tiny", "cpu")


def test_a_placed_pair_becomes_its_two_one_object_sentences():
    joined = compose.plan([ONE, PLACED], [4, 9])
    assert joined.first == [ONE, "a small red circle in the top left corner on a yellow background"]
    assert joined.second == ["a large blue square on the right on a yellow background"]
    assert joined.composed.tolist() == [1] and joined.places == [("top left", "right")]
    assert joined.tied.tolist() == [False]
    words = set(grammar.vocabulary())
    for sentence in joined.first + joined.second:  # every sentence is one the model was trained on
        said = compose.parse(sentence, words)
        assert said is not None and len(said["objects"]) <= 1


def test_articles_sizes_and_synonyms_are_written_as_training_captions_say_them():
    joined = compose.plan(["an orange disc at the top and a huge white plus at the bottom on an orange background"
                           .replace("on an orange background", "against a black background")], [0])
    assert joined.first == ["an orange circle at the top on a black background"]
    assert joined.second == ["a large white cross at the bottom on a black background"]


def test_an_unplaced_pair_gets_a_far_apart_pair_from_its_seed():
    pairs = compose.far_pairs()
    assert all(grammar.far_apart(a, b) for a, b in pairs) and len(pairs) == len(set(pairs))
    seen = set()
    for seed in range(40):
        joined = compose.plan([UNPLACED], [seed])
        where = joined.places[0]
        assert where == pairs[rng.choice(seed, rng.PLACEMENT_STREAM, len(pairs))]
        assert joined.first[0].startswith("a red circle " + grammar.POSITION_PHRASES[where[0]][0])
        seen.add(where)
        assert compose.plan([UNPLACED], [seed]).places == joined.places  # the seed decides
    assert len(seen) > 10


def test_one_object_refused_and_unknown_prompts_pass_as_they_are():
    prompts = [ONE, "a blue background", "a red circle on a red background", "a mauve circle", BARE]
    joined = compose.plan(prompts, [0] * 5)
    assert joined.first[:4] == prompts[:4] and joined.composed.tolist() == [4] and joined.tied.tolist() == [True]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8])
def test_each_token_goes_to_the_nearer_object_and_a_tie_to_the_first(n):
    for a, b in compose.far_pairs():
        taken = compose.second_region(a, b, n).reshape(n, n)
        c = (np.arange(n) + 0.5) / n
        ys, xs = np.meshgrid(c, c, indexing="ij")
        (ax, ay), (bx, by) = grammar.POSITIONS[a], grammar.POSITIONS[b]
        da, db = np.hypot(xs - ax, ys - ay), np.hypot(xs - bx, ys - by)
        assert np.array_equal(taken[~np.isclose(da, db)], (db < da)[~np.isclose(da, db)]), (a, b, n)
        assert not taken[np.isclose(da, db)].any()
    assert compose.second_region("top left", "bottom right", 8).reshape(8, 8)[7, 0] == False  # noqa: E712 (a tie)


def test_a_composed_image_is_its_two_passes_joined_bit_for_bit(pipe):
    loop, seed = pipe.loop, 5
    result = loop.generate([PLACED], seed=[seed], discrete_too=True)
    joined = compose.plan([PLACED], [seed])
    a = loop.generate(joined.first, seed=[seed], discrete_too=True)
    b = loop.generate(joined.second, seed=[seed], discrete_too=True)
    taken = joined.regions(8)[0].reshape(1, 1, 8, 8)
    latents = np.where(taken, b.latents, a.latents)
    assert np.array_equal(result.latents, latents)
    assert np.array_equal(np.asarray(result.images), np.asarray(loop.backend.decode_latents(latents)))
    for si, n in enumerate(loop.schedule.patch_nums):
        want = np.where(joined.regions(n), np.asarray(b.ids[si]), np.asarray(a.ids[si]))
        assert np.array_equal(np.asarray(result.ids[si]), want), si
    assert result.discrete_images.shape == result.images.shape
    assert not np.array_equal(np.asarray(result.images), np.asarray(a.images))  # the second object is there


def test_without_a_background_the_second_pass_takes_the_first_ones_background(pipe):
    loop = pipe.loop
    joined = compose.plan([BARE], [2])
    a = loop.generate(joined.first, seed=[2])
    keep = [np.ones((1, 1), bool)] + [np.zeros((1, n * n), bool) for n in loop.schedule.patch_nums[1:]]
    b = loop.generate(joined.second, seed=[2], forced=ForcedTokens([np.asarray(i) for i in a.ids], keep))
    result = loop.generate([BARE], seed=[2])
    assert np.array_equal(result.latents, np.where(joined.regions(8)[0].reshape(1, 1, 8, 8), b.latents, a.latents))
    assert np.asarray(b.image_ids[0]).item() == np.asarray(a.ids[0]).item()


def test_other_prompts_of_a_composed_batch_are_drawn_as_alone(pipe):
    loop = pipe.loop
    batch = loop.generate([ONE, PLACED, "a blue background"], seed=[1, 2, 3])
    for i, prompt in ((0, ONE), (2, "a blue background")):
        alone = loop.generate([prompt], seed=[i + 1])
        # the ids bit for bit; the pixels up to the decoder's rounding in a batch of another size
        assert np.allclose(np.asarray(batch.images[i]), np.asarray(alone.images[0]), atol=1e-5), prompt
        assert all(np.array_equal(np.asarray(x[i]), np.asarray(y[0])) for x, y in zip(batch.ids, alone.ids))


def test_compose_false_is_one_pass_and_other_models_never_compose(pipe, model):
    loop = pipe.loop
    one_pass = loop.generate([PLACED], seed=[5], compose=False)
    assert not np.array_equal(np.asarray(one_pass.images), np.asarray(loop.generate([PLACED], seed=[5]).images))
    assert not HARTPipeline(model, device="cpu").loop.composes  # a vocabulary that is not the grammar's


def test_an_edit_with_a_two_object_prompt_keeps_what_lies_outside(pipe):
    size = pipe.config.image_size
    picture = np.asarray(pipe.generate([ONE], seed=[3]).images, dtype=np.float32).transpose(0, 2, 3, 1)
    mask = np.zeros((1, size, size), bool)
    mask[0, : size // 2] = True
    prompt = "a small red circle at the top and a large green cross at the bottom on a blue background"
    edited = pipe.loop.edit(picture, mask, [prompt], seed=[4], feather=False)
    out = np.asarray(edited.images).transpose(0, 2, 3, 1)
    assert out.shape == picture.shape and np.array_equal(out[0, size // 2:], picture[0, size // 2:])
