import numpy as np
import pytest

from hart.config import TINY_VOCAB
from hart.data.scenes import (BACKGROUNDS, COLORS, HELD_OUT_PAIRS, IMAGE_SIZE, POSITION_PHRASES, POSITIONS,
                              SHAPE_WORDS, SIZE_OMITTED, SIZE_WORDS, SIZES, Scene, SceneObject, canonical_caption,
                              canonical_pair_caption, caption_vocabulary, image_array, make_scene, render,
                              with_articles)
from hart.portable.words import WordTokenizer


def test_scenes_are_deterministic():
    for i in (0, 7, 12345):
        assert make_scene(i) == make_scene(i)
        assert np.array_equal(image_array(make_scene(i)), image_array(make_scene(i)))
    assert make_scene(3, seed=1) != make_scene(3, seed=0)


def test_captions_name_every_attribute_they_claim_and_only_known_words():
    tokenizer = WordTokenizer(TINY_VOCAB, max_tokens=24)
    all_size_words = {w for words in SIZE_WORDS.values() for w in words}
    sized, unplaced = [], []
    for i in range(400):
        scene = make_scene(i)
        caption = scene.caption
        tokenizer([caption])  # every word is in the embedded model's vocabulary, within 24 words
        if not scene.objects:
            assert caption in (f"a {scene.background} background", f"an {scene.background} background")
            continue
        for obj in scene.objects:
            assert obj.color in caption.split()
            assert any(word in caption.split() for word in SHAPE_WORDS[obj.shape])
        named_sizes = [w for w in caption.split() if w in all_size_words]
        allowed = {w for obj in scene.objects for w in SIZE_WORDS[obj.size]}  # a size, when named, is right
        assert set(named_sizes) <= allowed and len(named_sizes) <= len(scene.objects)
        sized.append(len(named_sizes) / len(scene.objects))
        mentioned_positions = [p for p, phrases in POSITION_PHRASES.items() if any(ph in caption for ph in phrases)]
        placed = all(obj.position in mentioned_positions for obj in scene.objects)
        assert placed or len(scene.objects) == 1 or not mentioned_positions  # two objects: both or neither
        unplaced.append(len(scene.objects) == 2 and not mentioned_positions)
        if "background" in caption:
            assert scene.background in caption.split()
    assert 1 - SIZE_OMITTED - 0.08 <= np.mean(sized) <= 1 - SIZE_OMITTED + 0.08  # "a red circle" is trained too
    assert 0.04 < np.mean(unplaced) < 0.15  # "a red circle and a blue box" too


def test_every_color_word_is_trained_as_object_and_as_background_never_both_at_once():
    scenes = [make_scene(i) for i in range(1500)]
    assert set(BACKGROUNDS) == set(COLORS)  # "a blue circle on a yellow background" is a trained sentence
    assert {scene.background for scene in scenes} == set(BACKGROUNDS)
    assert {o.color for s in scenes for o in s.objects} == set(COLORS)
    assert all(s.background != o.color for s in scenes for o in s.objects)
    pairs = {(o.color, s.background) for s in scenes for o in s.objects}
    assert len(pairs) == len(COLORS) * (len(COLORS) - 1)  # every (object, background) color pair occurs
    counts = [len(s.objects) for s in scenes]
    assert {0, 1, 2} == set(counts) and 0.35 < counts.count(2) / len(counts) < 0.55
    two = [o.size for s in scenes if len(s.objects) == 2 for o in s.objects]
    assert {"small", "large"} == set(two)  # two-object prompts may name any size


def test_an_before_a_vowel_and_the_sloppy_a_both_occur():
    captions = [make_scene(i).caption.split() for i in range(1500)]
    after = [(w, nxt) for c in captions for w, nxt in zip(c, c[1:]) if w in ("a", "an")]
    assert all(nxt[0] in "aeiou" for w, nxt in after if w == "an")
    before_vowel = [w for w, nxt in after if nxt[0] in "aeiou"]
    assert 0.7 < before_vowel.count("an") / len(before_vowel) < 0.9
    assert with_articles("a orange circle on a orange background") == "an orange circle on an orange background"
    assert canonical_caption(Scene("blue", (SceneObject("circle", "orange", "large", "left"),), "")) == \
        "a large orange circle on the left on a blue background"


def test_held_out_pair_scenes_pair_an_unseen_object_with_a_seen_one():
    for i in range(200):
        scene = make_scene(i, "heldout_pairs")
        first, second = scene.objects
        assert (first.color, first.shape) in HELD_OUT_PAIRS and (second.color, second.shape) not in HELD_OUT_PAIRS
        assert scene.background not in (first.color, second.color) and first.position != second.position
        caption = canonical_pair_caption(scene)
        assert caption.startswith(("a ", "an ")) and caption.endswith(f"{scene.background} background")


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
        if len(objects) == 2:  # even two large shapes keep a gap, wherever their jitter puts them
            a, b = (np.array(POSITIONS[o.position]) * IMAGE_SIZE for o in objects)
            gap = np.hypot(*(a - b)) - SIZES[objects[0].size] - SIZES[objects[1].size] - 2 * 4 * np.sqrt(2)
            assert gap > 2


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
