import numpy as np
import pytest

from hart.config import TINY_VOCAB
from hart.data.scenes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, IMAGE_SIZE, POSITION_PHRASES, POSITIONS,
                              SHAPE_WORDS, SIZE_OMITTED, SIZE_WORDS, SIZES, canonical_caption, caption_vocabulary,
                              image_array, make_scene, render)
from hart.portable.words import WordTokenizer


def test_scenes_are_deterministic():
    for i in (0, 7, 12345):
        assert make_scene(i) == make_scene(i)
        assert np.array_equal(image_array(make_scene(i)), image_array(make_scene(i)))
    assert make_scene(3, seed=1) != make_scene(3, seed=0)


def test_captions_name_every_attribute_they_claim_and_only_known_words():
    tokenizer = WordTokenizer(TINY_VOCAB, max_tokens=24)
    all_size_words = {w for words in SIZE_WORDS.values() for w in words}
    sized = []
    for i in range(400):
        scene = make_scene(i)
        caption = scene.caption
        tokenizer([caption])  # every word is in the embedded model's vocabulary, within 24 words
        for obj in scene.objects:
            assert obj.color in caption.split()
            assert any(word in caption.split() for word in SHAPE_WORDS[obj.shape])
        named_sizes = [w for w in caption.split() if w in all_size_words]
        allowed = {w for obj in scene.objects for w in SIZE_WORDS[obj.size]}  # a size, when named, is right
        assert set(named_sizes) <= allowed and len(named_sizes) <= len(scene.objects)
        sized.append(len(named_sizes) / len(scene.objects))
        mentioned_positions = [p for p, phrases in POSITION_PHRASES.items() if any(ph in caption for ph in phrases)]
        assert all(obj.position in mentioned_positions for obj in scene.objects) or len(scene.objects) == 1
        if "background" in caption:
            assert scene.background in caption.split()
    assert 1 - SIZE_OMITTED - 0.08 <= np.mean(sized) <= 1 - SIZE_OMITTED + 0.08  # "a red circle" is trained too


def test_every_background_occurs_and_never_hides_an_object():
    scenes = [make_scene(i) for i in range(400)]
    assert {scene.background for scene in scenes} == set(BACKGROUNDS)  # "blue background" is trained
    assert all(BACKGROUNDS[s.background] != COLORS[o.color] for s in scenes for o in s.objects)


def test_held_out_pairs_never_appear_in_training():
    for i in range(3000):
        for obj in make_scene(i, "train").objects:
            assert (obj.color, obj.shape) not in HELD_OUT_PAIRS
    seen = {(o.color, o.shape) for i in range(300) for o in make_scene(i, "heldout").objects}
    assert seen <= HELD_OUT_PAIRS and len(seen) >= 6


def test_the_image_shows_the_attributes():
    for i in range(60):
        scene = make_scene(i, "heldout")
        obj = scene.objects[0]
        pixels = np.asarray(render(scene)).astype(int)
        x, y = (np.array(POSITIONS[obj.position]) * IMAGE_SIZE + np.array(obj.jitter)).round().astype(int)
        if obj.shape != "cross" and obj.shape != "star":  # hollow-ish centres aside, the centre is the object's
            assert np.abs(pixels[y, x] - COLORS[obj.color]).max() <= 12, scene
        far_corner = (0, 0) if POSITIONS[obj.position][0] > 0.3 or POSITIONS[obj.position][1] > 0.3 else (127, 127)
        assert np.abs(pixels[far_corner] - BACKGROUNDS[scene.background]).max() <= 3


def test_objects_stay_inside_and_pairs_do_not_touch():
    for i in range(500):
        objects = make_scene(i).objects
        for obj in objects:
            cx, cy = np.array(POSITIONS[obj.position]) * IMAGE_SIZE + obj.jitter
            r = SIZES[obj.size]
            assert r <= cx <= IMAGE_SIZE - r and r <= cy <= IMAGE_SIZE - r
        if len(objects) == 2:
            a, b = (np.array(POSITIONS[o.position]) * IMAGE_SIZE for o in objects)
            assert np.hypot(*(a - b)) > 2 * SIZES["small"] + 8


def test_canonical_captions_are_complete():
    scene = make_scene(0, "heldout")
    caption = canonical_caption(scene)
    obj = scene.objects[0]
    assert caption.startswith(f"a {SIZE_WORDS[obj.size][0]} {obj.color} {SHAPE_WORDS[obj.shape][0]}")
    assert caption.endswith(f"on a {scene.background} background")


def test_the_tiny_preset_knows_exactly_the_caption_words():
    assert TINY_VOCAB == caption_vocabulary()


@pytest.mark.parametrize("size", [64, 128])
def test_renders_at_other_sizes(size):
    assert image_array(make_scene(1), size).shape == (3, size, size)
