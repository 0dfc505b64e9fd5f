"""The caption grammar of the embedded model: its words, and which sentences of them it was trained on.

The scene generator (hart.data.scenes) writes its captions from these tables, and every runtime's word
tokenizer checks a prompt against them (for a model whose vocabulary is exactly this grammar's), so a
sentence the model never saw the like of is refused in one sentence that says what it can draw,
instead of being drawn as something else ("a red circle on a red background" has no visible circle;
three objects, or two in the same corner, were never trained). Pure Python: every runtime uses it.
"""

import math
from functools import cache

from hart.errors import PromptError

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (240, 210, 30),
    "orange": (255, 127, 14), "purple": (148, 58, 189), "white": (245, 245, 245), "black": (20, 20, 20),
    "gray": (128, 128, 128), "beige": (225, 205, 160),
}
POSITIONS: dict[str, tuple[float, float]] = {  # object centre as a fraction of the image (x, y)
    "center": (0.5, 0.5), "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
    "top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75),
}
SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
               "star": ("star",), "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
POSITION_PHRASES = {
    "center": ("in the center", "in the middle", "at the center"),
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "at the top edge"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom edge"),
    "top left": ("in the top left corner", "at the top left", "in the top left", "in the upper left corner"),
    "top right": ("in the top right corner", "at the top right", "in the top right", "in the upper right corner"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the bottom left", "in the lower left corner"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the bottom right", "in the lower right corner"),
}
BACKGROUND_PHRASES = ("on a {bg} background", "against a {bg} background", "over a {bg} background",
                      "with a {bg} background")
ONE_OBJECT_TEMPLATES = ("a {obj} {pos} {bg}", "{obj} {pos} {bg}", "a {obj} {pos}", "{obj} {pos}", "a {obj} {bg}",
                        "{bg_lead} a {obj} {pos}", "a {obj}")
TWO_OBJECT_TEMPLATES = ("a {obj1} {pos1} and a {obj2} {pos2} {bg}", "{obj1} {pos1} and {obj2} {pos2}",
                        "a {obj1} {pos1} and a {obj2} {pos2}")
TWO_OBJECT_UNPLACED_TEMPLATES = ("a {obj1} and a {obj2} {bg}", "a {obj1} and a {obj2}", "{obj1} and {obj2} {bg}")
MIN_PAIR_DISTANCE = 0.49  # of the image side: two objects' centres; two shapes never touch
ARTICLES = ("a", "an")
BACKGROUND_PREPOSITIONS = ("on", "against", "over", "with")
EXAMPLE = "'a small red circle on the left and a blue square on the right on a yellow background'"
DRAWS = f"this model draws one or two objects on a background of another color, e.g. {EXAMPLE}"


@cache
def vocabulary() -> tuple[str, ...]:
    """Every word a caption can contain, sorted: the embedded text encoder's vocabulary."""
    phrases = [w for words in SHAPE_WORDS.values() for w in words] + [w for words in SIZE_WORDS.values() for w in words]
    phrases += [p for ps in POSITION_PHRASES.values() for p in ps] + list(COLORS)
    phrases += list(BACKGROUND_PHRASES) + list(ONE_OBJECT_TEMPLATES) + list(TWO_OBJECT_TEMPLATES)
    phrases += list(TWO_OBJECT_UNPLACED_TEMPLATES)
    words = {w for phrase in phrases for w in phrase.replace("{", " {").split() if not w.startswith("{")}
    return tuple(sorted(words | {*ARTICLES, "and", "background"}))


def speaks(vocab: tuple[str, ...]) -> bool:
    """Whether a word model's vocabulary is exactly the grammar's: such a model was trained on its sentences
    only, so its prompts are checked against them (check_prompt) and two objects are composed."""
    return tuple(vocab) == vocabulary()


def manifest_section() -> dict:
    """The tables check_prompt reads, for an export's manifest (text.grammar): a port refuses the same prompts."""
    return {"check": "hart/portable/grammar.py check_prompt: one optional background phrase ([preposition] [article] "
                     "color 'background', or a leading 'color background with'); the rest split at 'and' into 1-2 "
                     "objects '[article] [size] color shape [position phrase]'; an object never of the background's "
                     "color; two objects both placed at least min_pair_distance apart, or neither placed",
            "colors": list(COLORS), "shapes": {w: name for name, ws in SHAPE_WORDS.items() for w in ws},
            "sizes": {w: name for name, ws in SIZE_WORDS.items() for w in ws},
            "positions": {p: name for name, ps in POSITION_PHRASES.items() for p in ps},
            "coordinates": {name: list(xy) for name, xy in POSITIONS.items()}, "min_pair_distance": MIN_PAIR_DISTANCE,
            "articles": list(ARTICLES), "background_prepositions": list(BACKGROUND_PREPOSITIONS), "draws": DRAWS}


def far_apart(a: str, b: str) -> bool:
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    return math.hypot(ax - bx, ay - by) >= MIN_PAIR_DISTANCE


@cache
def _words_of(table: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[tuple[str, ...], str]:
    return {tuple(phrase.split()): name for name, phrases in table for phrase in phrases}


def _shapes() -> dict[tuple[str, ...], str]:
    return _words_of(tuple(SHAPE_WORDS.items()))


def _sizes() -> dict[tuple[str, ...], str]:
    return _words_of(tuple(SIZE_WORDS.items()))


def _positions() -> dict[tuple[str, ...], str]:
    return _words_of(tuple(POSITION_PHRASES.items()))


def _background(words: list[str], say) -> tuple[str | None, list[str]]:
    """The background color and the words without its phrase ('on a blue background', 'blue background with')."""
    at = [i for i, w in enumerate(words) if w == "background"]
    if not at:
        return None, words
    if len(at) > 1:
        raise say("names more than one background")
    k = at[0]
    if k == 0 or words[k - 1] not in COLORS:
        raise say("says 'background' without a color before it (e.g. 'on a blue background')")
    start, end = k - 1, k + 1
    if start > 0 and words[start - 1] in ARTICLES:
        start -= 1
    if start > 0 and words[start - 1] in BACKGROUND_PREPOSITIONS:
        start -= 1
    elif start == 0 and end < len(words) and words[end] == "with":  # 'blue background with a red circle'
        end += 1
    return words[k - 1], words[:start] + words[end:]


def _object(chunk: list[str], say) -> dict[str, str | None]:
    """[a|an] [size] color shape [position phrase] -> its attributes (size and position may be None)."""
    rest = chunk[1:] if chunk[:1] and chunk[0] in ARTICLES else chunk
    size = _sizes().get(tuple(rest[:1]))
    rest = rest[1:] if size else rest
    if len(rest) < 2 or rest[0] not in COLORS or (rest[1],) not in _shapes():
        raise say(f"describes an object as '{' '.join(chunk)}'; write each object as '[a] [size] color shape "
                  f"[position]', e.g. 'a small red circle on the left', with a color ({', '.join(COLORS)}) and a "
                  f"shape ({', '.join(SHAPE_WORDS)})")
    position = None
    if rest[2:]:
        position = _positions().get(tuple(rest[2:]))
        if position is None:
            known = ", ".join(phrases[0] for phrases in POSITION_PHRASES.values())
            raise say(f"places an object '{' '.join(rest[2:])}', which is not a position this model knows "
                      f"({known})")
    return {"color": rest[0], "shape": _shapes()[(rest[1],)], "size": size, "position": position}


def check_prompt(prompt: str, words: list[str], number: int) -> dict:
    """Refuse, in one sentence, a prompt (split into `words`) that is not a sentence the model was trained on.

    -> what it says: {"background": color or None, "objects": [{"color", "shape", "size", "position"}]}, the
    shape by name (its first word), size and position None where the prompt leaves them out."""
    def say(problem: str) -> PromptError:
        shown = prompt if len(prompt) <= 80 else prompt[:80] + "…"
        return PromptError(f"prompt {number} ({shown!r}) {problem}; {DRAWS}")

    background, rest = _background(list(words), say)
    chunks: list[list[str]] = [[]]  # the objects' words, split at 'and'
    for word in rest:
        if word == "and":
            chunks.append([])
        else:
            chunks[-1].append(word)
    if chunks == [[]]:
        if background is None:
            raise say("names neither an object nor a background")
        return {"background": background, "objects": []}  # 'a blue background'
    if any(not chunk for chunk in chunks):
        raise say("has an 'and' with no object on one side")
    if len(chunks) > 2:
        raise say(f"names {len(chunks)} objects, and this model draws at most two")
    objects = [_object(chunk, say) for chunk in chunks]
    for obj in objects:
        if obj["color"] == background:
            raise say(f"puts a {obj['color']} object on a {background} background, where it would not show")
    if len(objects) == 2:
        a, b = objects
        if (a["position"] is None) != (b["position"] is None):
            raise say("places one of its two objects and not the other; name a position for both (e.g. 'on the "
                      "left' and 'on the right') or for neither")
        if a["position"] is not None and not far_apart(a["position"], b["position"]):
            raise say(f"places two objects at {a['position']} and {b['position']}, too close for this model: "
                      "it places two objects at least half the image apart")
    return {"background": background, "objects": objects}
