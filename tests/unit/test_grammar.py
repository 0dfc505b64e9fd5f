"""The caption grammar: every training caption is a sentence it accepts, and what was never trained is
refused in one sentence that names the problem and what the model can draw."""

import pytest

from hart.config import TINY_VOCAB
from hart.data.scenes import SPLITS, make_scene
from hart.errors import PromptError
from hart.portable.grammar import COLORS, vocabulary
from hart.portable.words import WordTokenizer

WORDS = WordTokenizer(vocabulary(), max_tokens=24)


def test_the_grammar_checks_only_models_of_exactly_its_words():
    assert WORDS.checks_grammar and vocabulary() == TINY_VOCAB
    older = WordTokenizer(tuple(w for w in vocabulary() if w != "an"), 24)  # the first embedded model's words
    assert not older.checks_grammar
    older(["a red circle on a red background"])  # not refused: that model was not trained on this grammar


@pytest.mark.parametrize("split", sorted(SPLITS))
def test_every_caption_the_data_writes_is_accepted(split):
    for i in range(2000 if split == "train" else 300):
        WORDS([make_scene(i, split).caption])


@pytest.mark.parametrize("prompt", [
    "an orange diamond",  # issue 21: "an" was unknown
    "a blue circle on a yellow background", "a green square on a yellow background",  # every color a background
    "a gray star on a purple background", "a beige box in the middle",  # every color an object
    "a blue diamond and a orange cross on a gray background",  # two objects, no positions, the sloppy "a"
    "a red square in the top left and a yellow circle in the bottom right on a green background",
    "orange background with a big white plus at the top", "a black background", "huge red disc",
])
def test_sentences_a_user_types_are_trained_ones(prompt):
    WORDS([prompt])


@pytest.mark.parametrize(("prompt", "named"), [
    ("a red circle on a red background", "red object on a red background"),
    ("a red circle on the left and a blue square on the right and a green star", "3 objects"),
    ("a red circle at the top and a blue square in the top left corner", "too close"),
    ("a red circle on the left and a blue star", "one of its two objects"),
    ("circle red", "'[a] [size] color shape [position]'"),
    ("a circle on the left", "with a color"),
    ("a red circle on the top", "not a position this model knows"),
    ("a red circle on a blue background on a green background", "more than one background"),
    ("a red circle and", "no object on one side"),
    ("on the left", "describes an object"),
    ("background", "without a color before it"),
])
def test_untrained_sentences_are_refused_in_one_sentence(prompt, named):
    with pytest.raises(PromptError) as error:
        WORDS(["a red circle", prompt])
    message = str(error.value)
    assert message.startswith(f"prompt 2 ({prompt!r})") and named in message and "\n" not in message
    assert "e.g. 'a small red circle on the left" in message  # says what the model can draw
    assert all(color in message for color in COLORS) or "object" in message
