"""Procedural captioned scenes: the training and evaluation data of the embedded model.

A scene is a flat background with one or two shapes. Every attribute is drawn from a seeded
generator keyed by (seed, split, index), so scene i of a split is the same on every machine, and the
caption is written from varied templates and synonyms. Every color word is both an object color and a
background color (never the same one in a scene), so every sentence the vocabulary can say about
colors is one the model was trained on. Ten (color, shape) pairs are held out: no training scene
contains them, so the evaluator can measure how the model composes attributes it only saw apart.
"""

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from hart.portable.grammar import (BACKGROUND_PHRASES, COLORS, ONE_OBJECT_TEMPLATES, POSITION_PHRASES, POSITIONS,
                                   SHAPE_WORDS, SIZE_WORDS, TWO_OBJECT_TEMPLATES, TWO_OBJECT_UNPLACED_TEMPLATES, far_apart,
                                   vocabulary)

IMAGE_SIZE = 128

# Every color word names a background too, of the same color ("a red circle on a blue background").
BACKGROUNDS: dict[str, tuple[int, int, int]] = dict(COLORS)
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = {"small": 13, "large": 24}  # radius in pixels at 128 px
# (color, shape) pairs that never occur in training: one per color, every shape at least once.
HELD_OUT_PAIRS = frozenset({
    ("red", "star"), ("green", "triangle"), ("blue", "diamond"), ("yellow", "cross"),
    ("orange", "circle"), ("purple", "square"), ("white", "star"), ("black", "circle"),
    ("gray", "triangle"), ("beige", "cross"),
})
TWO_OBJECTS = 0.45  # share of training scenes with two objects (the harder half of the task)
NO_OBJECT = 0.03  # share of training scenes that are a bare background ("a blue background")

# heldout: one object of a held-out pair; heldout_pairs: two objects, the first of a held-out pair;
# classifier: 0-2 objects of any pair, for the judge; test: one object of any pair.
SPLITS = {"train": 0, "heldout": 1, "classifier": 2, "test": 3, "heldout_pairs": 4}

# ------------------------------------------------------------------------------------- captions
# Share of described objects whose size goes unsaid, so "a red circle on a blue background" is a caption
# the model has seen. Drawn from its own RNG stream: scenes and every other caption word stay as they were.
SIZE_OMITTED = 0.25
PLACES_OMITTED = 0.2  # share of two-object captions that name neither position (the scene still has them)
AN_SPOKEN = 0.8  # share of vowel-initial words after which a caption says "an" rather than "a"


def caption_vocabulary() -> tuple[str, ...]:
    """Every word a caption can contain, sorted: the embedded text encoder's vocabulary."""
    return vocabulary()


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    position: str
    jitter: tuple[float, float] = (0.0, 0.0)  # pixels added to the centre
    angle: float = 0.0  # degrees; every shape is drawn at a small random tilt


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[SceneObject, ...]
    caption: str


# ------------------------------------------------------------------------------------- sampling
def _choice(rng: np.random.Generator, options):
    options = tuple(options)
    return options[int(rng.integers(len(options)))]


@cache
def _position_pairs() -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for a in POSITIONS for b in POSITIONS if a != b and far_apart(a, b))


@cache
def _object_combinations(held_out: bool) -> tuple[tuple[str, str], ...]:
    return tuple((c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT_PAIRS) == held_out)


def _sample_object(rng: np.random.Generator, background: str, held_out: bool, size: str | None = None,
                   position: str | None = None) -> SceneObject:
    combos = [(c, s) for c, s in _object_combinations(held_out) if c != background]
    color, shape = _choice(rng, combos)
    return SceneObject(
        shape=shape, color=color, size=size or _choice(rng, SIZES), position=position or _choice(rng, POSITIONS),
        jitter=tuple(float(v) for v in rng.uniform(-4, 4, size=2)), angle=float(rng.uniform(-12, 12)))


def describe_object(obj: SceneObject, rng: np.random.Generator | None = None, with_size: bool = True) -> str:
    """'large red circle' (the first synonym of everything when rng is None), 'red circle' without size."""
    pick = (lambda options: _choice(rng, options)) if rng is not None else (lambda options: options[0])
    size = f"{pick(SIZE_WORDS[obj.size])} " if with_size else ""
    return f"{size}{obj.color} {pick(SHAPE_WORDS[obj.shape])}"


def canonical_caption(scene: Scene) -> str:
    """The evaluation prompt of a one-object scene: every attribute, first synonyms."""
    obj = scene.objects[0]
    return with_articles(f"a {describe_object(obj)} {POSITION_PHRASES[obj.position][0]} on a {scene.background} "
                         "background")


def canonical_pair_caption(scene: Scene) -> str:
    """The evaluation prompt of a two-object scene: every attribute of both objects, first synonyms."""
    a, b = scene.objects
    return with_articles(f"a {describe_object(a)} {POSITION_PHRASES[a.position][0]} and a {describe_object(b)} "
                         f"{POSITION_PHRASES[b.position][0]} on a {scene.background} background")


def with_articles(caption: str, rng: np.random.Generator | None = None) -> str:
    """'a' before a vowel becomes 'an' (always without rng; with share AN_SPOKEN with it, so the sloppy
    'a orange circle' a user may type stays a caption the model has seen)."""
    words = caption.split(" ")
    for i, (word, following) in enumerate(zip(words, words[1:])):
        if word == "a" and following[:1] in "aeiou" and (rng is None or rng.random() < AN_SPOKEN):
            words[i] = "an"
    return " ".join(words)


def _caption(rng: np.random.Generator, background: str, objects: tuple[SceneObject, ...],
             with_size: tuple[bool, ...], placed: bool = True) -> str:
    """placed: a two-object caption names both positions (else neither: 'a red circle and a blue box')."""
    bg = _choice(rng, BACKGROUND_PHRASES).format(bg=background)
    if len(objects) == 1:
        template = _choice(rng, ONE_OBJECT_TEMPLATES)
        obj = objects[0]
        return template.format(obj=describe_object(obj, rng, with_size[0]),
                               pos=_choice(rng, POSITION_PHRASES[obj.position]),
                               bg=bg, bg_lead=f"{background} background with").strip()
    template = _choice(rng, TWO_OBJECT_TEMPLATES if placed else TWO_OBJECT_UNPLACED_TEMPLATES)
    a, b = objects
    return template.format(obj1=describe_object(a, rng, with_size[0]), pos1=_choice(rng, POSITION_PHRASES[a.position]),
                           obj2=describe_object(b, rng, with_size[1]), pos2=_choice(rng, POSITION_PHRASES[b.position]),
                           bg=bg)


def _any_object(rng: np.random.Generator, background: str, position: str | None = None) -> SceneObject:
    """An object of any (color, shape) pair, held-out ones included: the judge's and the tests' scenes."""
    color, shape = _choice(rng, [(c, s) for c in COLORS for s in SHAPES if c != background])
    base = _sample_object(rng, background, held_out=False, position=position)
    return SceneObject(shape, color, base.size, base.position, base.jitter, base.angle)


def _objects(rng: np.random.Generator, split: str, background: str) -> tuple[SceneObject, ...]:
    if split == "classifier":  # 0, 1 or 2 objects: the judge also learns to count
        count = _choice(rng, (0, 1, 1, 2, 2))
        where = {0: (), 1: (None,), 2: _choice(rng, _position_pairs())}[count]  # one object: any position
        return tuple(_any_object(rng, background, p) for p in where)
    if split == "test":
        return (_any_object(rng, background),)
    if split == "heldout_pairs":
        first, second = _choice(rng, _position_pairs())
        return (_sample_object(rng, background, held_out=True, position=first),
                _sample_object(rng, background, held_out=False, position=second))
    draw = rng.random() if split == "train" else 1.0
    if draw < NO_OBJECT:
        return ()
    if draw < NO_OBJECT + TWO_OBJECTS:
        return tuple(_sample_object(rng, background, held_out=False, position=p) for p in _choice(rng, _position_pairs()))
    return (_sample_object(rng, background, held_out=split == "heldout"),)


def make_scene(index: int, split: str = "train", seed: int = 0) -> Scene:
    """Scene `index` of a split (SPLITS says what each holds); train never holds a held-out pair."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    background = _choice(rng, BACKGROUNDS)
    objects = _objects(rng, split, background)
    words = np.random.default_rng([seed, SPLITS[split], index, 1])  # its own stream: scenes stay as drawn
    with_size = tuple(words.random(len(objects)) >= SIZE_OMITTED)
    placed = words.random() >= PLACES_OMITTED
    caption = _caption(rng, background, objects, with_size, placed) if objects else f"a {background} background"
    return Scene(background, objects, with_articles(caption, words))


# ------------------------------------------------------------------------------------- rendering
def _outline(shape: str, radius: float) -> list[tuple[float, float]] | None:
    """Polygon vertices around the origin (None for the circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        r = radius * 0.86
        return [(-r, -r), (r, -r), (r, r), (-r, r)]
    if shape == "triangle":
        return [(radius * math.cos(a), radius * math.sin(a) + radius * 0.15)
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "diamond":
        return [(0, -radius), (radius * 0.75, 0), (0, radius), (-radius * 0.75, 0)]
    if shape == "star":
        return [((radius if i % 2 == 0 else radius * 0.45) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (radius if i % 2 == 0 else radius * 0.45) * math.sin(-math.pi / 2 + i * math.pi / 5))
                for i in range(10)]
    if shape == "cross":
        a, b = radius, radius * 0.33
        return [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
                (-b, -b)]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int = IMAGE_SIZE, supersample: int = 4) -> Image.Image:
    """Draw the scene at `size` px (anti-aliased by drawing `supersample` times larger)."""
    big = size * supersample
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    scale = big / IMAGE_SIZE
    for obj in scene.objects:
        cx = POSITIONS[obj.position][0] * big + obj.jitter[0] * scale
        cy = POSITIONS[obj.position][1] * big + obj.jitter[1] * scale
        radius = SIZES[obj.size] * scale
        points = _outline(obj.shape, radius)
        fill = COLORS[obj.color]
        if points is None:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
            continue
        turn = math.radians(obj.angle)
        cos, sin = math.cos(turn), math.sin(turn)
        draw.polygon([(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points], fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def image_array(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """[3, size, size] float32 in [0, 1]."""
    return np.asarray(render(scene, size), dtype=np.float32).transpose(2, 0, 1) / 255.0
