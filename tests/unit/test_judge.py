"""The judge's reading of whole scenes and how `hart eval` scores whole prompts with it."""

import pytest
import torch

from hart.data.scenes import make_scene
from hart.errors import HartError
from hart.eval.classifier import ATTRIBUTES, SLOT_ATTRIBUTES, SceneClassifier, SceneReading, scene_labels, \
    scene_reading, scene_truth
from hart.eval.evaluate import _object_accuracy, _per_background, _whole
from hart.train.generator import _grown_vocabulary


def _certain_logits(scenes) -> dict[str, torch.Tensor]:
    """The logits a perfect judge would give: +10 for every true label, 0 elsewhere."""
    labels = [scene_labels(s) for s in scenes]
    slots = len(ATTRIBUTES["position"])
    logits = {"background": torch.zeros(len(scenes), len(ATTRIBUTES["background"])),
              "occupied": torch.stack([(label["occupied"] * 2 - 1) * 10 for label in labels])}
    for name in SLOT_ATTRIBUTES:
        logits[name] = torch.zeros(len(scenes), slots, len(ATTRIBUTES[name]))
    for i, label in enumerate(labels):
        logits["background"][i, label["background"]] = 10
        for name in SLOT_ATTRIBUTES:
            for slot, value in enumerate(label[name].tolist()):
                if value >= 0:
                    logits[name][i, slot, value] = 10
    return logits


def test_a_perfect_judge_reads_back_every_scene(monkeypatch):
    scenes = [make_scene(i, split) for split in ("classifier", "heldout_pairs", "heldout") for i in range(40)]
    judge = SceneClassifier(image_size=16)
    monkeypatch.setattr(judge, "forward", lambda images: _certain_logits(scenes))
    images = torch.zeros(len(scenes), 3, 16, 16)
    assert judge.read(images) == [scene_reading(s) for s in scenes]
    assert {len(s.objects) for s in scenes} == {0, 1, 2}
    one = [i for i, s in enumerate(scenes) if len(s.objects) == 1]
    predicted = judge.predict(images)
    for name in ATTRIBUTES:
        assert [predicted[name][i] for i in one] == [scene_truth(scenes[i])[name] for i in one]


def test_the_judge_has_the_shapes_it_says():
    logits = SceneClassifier(image_size=64)(torch.rand(3, 3, 64, 64))
    assert logits["background"].shape == (3, 10) and logits["occupied"].shape == (3, 9)
    assert logits["color"].shape == (3, 9, 10) and logits["shape"].shape == (3, 9, 6) and logits["size"].shape == (3, 9, 2)


def test_a_whole_prompt_is_right_only_when_everything_is():
    want = SceneReading("blue", (("left", "red", "circle", "small"), ("right", "green", "star", "large")))
    swapped = SceneReading("blue", (("left", "green", "star", "small"), ("right", "red", "circle", "large")))
    extra = SceneReading("blue", want.objects + (("top", "red", "circle", "small"),))
    missing = SceneReading("blue", want.objects[:1])
    background = SceneReading("yellow", want.objects)
    read = [want, swapped, extra, missing, background]
    assert _whole(read, [want] * 5) == [True, False, False, False, False]
    per_object = _object_accuracy(read, [want] * 5)
    assert per_object["position"] == pytest.approx(9 / 10) and per_object["color"] == pytest.approx(7 / 10)
    rows = _per_background(read, [want] * 5)
    assert rows["blue"] == {"prompts": 5, "background": 0.8, "whole_prompt": 0.2} and rows["red"] == {"prompts": 0}


def test_a_grown_vocabulary_keeps_every_old_words_row_and_starts_an_from_a():
    old, new = ("a", "blue", "red"), ("a", "an", "blue", "green", "red")
    table = torch.arange(5 * 2, dtype=torch.float32).view(5, 2)  # pad, unknown, a, blue, red
    grown = _grown_vocabulary({"embed.weight": table, "other": table}, old, new, "x")["embed.weight"]
    assert torch.equal(grown[[0, 1, 2, 4, 6]], table)  # pad, unknown, a, blue, red at their new ids
    assert torch.equal(grown[3], table[2])  # "an" starts as "a"
    assert torch.equal(grown[5], table[2:].mean(0))  # an unrelated new word: the mean of the old ones
    with pytest.raises(HartError, match="lost"):
        _grown_vocabulary({"embed.weight": table}, old, ("a", "blue"), "x")


def test_the_ghost_share_counts_faint_marks_away_from_objects_only():
    from hart.data.scenes import Scene, SceneObject, image_array
    from hart.eval.metrics import ghost_share

    clean = torch.from_numpy(image_array(Scene("blue", (SceneObject("circle", "red", "small", "left"),), ""), 64))
    assert ghost_share(clean[None]) == 0.0  # an object with anti-aliased edges is not a ghost
    marked = clean.clone()
    marked[:, 40:44, 50:54] += 0.1  # a faint 4 x 4 mark far from the circle
    share = ghost_share(torch.stack([marked, clean]))
    far_pixels = 64 * 64 - (2 * 3 + 2 * 6) ** 2  # roughly: the circle and its margin excluded
    assert 16 / (64 * 64) / 2 < share < 16 / far_pixels / 2 * 1.5
