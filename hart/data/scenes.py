"""Procedural captioned scenes: the training and evaluation data of the embedded model.

A scene is a flat background with one or two shapes. Every attribute is drawn from a seeded
generator keyed by (seed, split, index), so scene i of a split is the same on every machine, and the
caption is written from varied templates and synonyms. Eight (color, shape) pairs are held out:
no training scene contains them, so the evaluator can measure how the model composes attributes it
only saw apart.
"""

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 128

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (240, 210, 30),
    "orange": (255, 127, 14), "purple": (148, 58, 189), "white": (245, 245, 245), "black": (20, 20, 20),
}
# A background named after an object color is that color ("a red circle on a blue background").
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128), "white": (245, 245, 245), "black": (20, 20, 20), "beige": (225, 205, 160),
    "blue": COLORS["blue"], "green": COLORS["green"], "red": COLORS["red"],
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = {"small": 13, "large": 24}  # radius in pixels at 128 px
POSITIONS: dict[str, tuple[float, float]] = {  # object centre as a fraction of the image (x, y)
    "center": (0.5, 0.5), "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
    "top left": (0.25, 0.25), "top right": (0.75, 0.25), "bottom left": (0.25, 0.75), "bottom right": (0.75, 0.75),
}
# (color, shape) pairs that never occur in training: one per color, every shape at least once.
HELD_OUT_PAIRS = frozenset({
    ("red", "star"), ("green", "triangle"), ("blue", "diamond"), ("yellow", "cross"),
    ("orange", "circle"), ("purple", "square"), ("white", "star"), ("black", "circle"),
})

SPLITS = {"train": 0, "heldout": 1, "classifier": 2, "test": 3}

# ------------------------------------------------------------------------------------- captions
SHAPE_WORDS = {"circle": ("circle", "disc"), "square": ("square", "box"), "triangle": ("triangle",),
               "star": ("star",), "diamond": ("diamond", "rhombus"), "cross": ("cross", "plus")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
# Share of described objects whose size goes unsaid, so "a red circle on a blue background" is a caption
# the model has seen. Drawn from its own RNG stream: scenes and every other caption word stay as they were.
SIZE_OMITTED = 0.25
POSITION_PHRASES = {
    "center": ("in the center", "in the middle", "at the center"),
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "at the top edge"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom edge"),
    "top left": ("in the top left corner", "at the top left", "in the upper left corner"),
    "top right": ("in the top right corner", "at the top right", "in the upper right corner"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left corner"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right corner"),
}
BACKGROUND_PHRASES = ("on a {bg} background", "against a {bg} background", "over a {bg} background",
                      "with a {bg} background")
ONE_OBJECT_TEMPLATES = ("a {obj} {pos} {bg}", "{obj} {pos} {bg}", "a {obj} {pos}", "{obj} {pos}", "a {obj} {bg}",
                        "{bg_lead} a {obj} {pos}")
TWO_OBJECT_TEMPLATES = ("a {obj1} {pos1} and a {obj2} {pos2} {bg}", "{obj1} {pos1} and {obj2} {pos2}",
                        "a {obj1} {pos1} and a {obj2} {pos2}")


def caption_vocabulary() -> tuple[str, ...]:
    """Every word a caption can contain, sorted: the embedded text encoder's vocabulary."""
    phrases = [w for words in SHAPE_WORDS.values() for w in words] + [w for words in SIZE_WORDS.values() for w in words]
    phrases += [p for ps in POSITION_PHRASES.values() for p in ps] + list(COLORS) + list(BACKGROUNDS)
    phrases += list(BACKGROUND_PHRASES) + list(ONE_OBJECT_TEMPLATES) + list(TWO_OBJECT_TEMPLATES)
    words = {w for phrase in phrases for w in phrase.replace("{", " {").split() if not w.startswith("{")}
    return tuple(sorted(words | {"a", "and", "background"}))


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


def _far_apart(a: str, b: str) -> bool:
    (ax, ay), (bx, by) = POSITIONS[a], POSITIONS[b]
    return math.hypot(ax - bx, ay - by) >= 0.49  # two small shapes never touch


@cache
def _position_pairs() -> tuple[tuple[str, str], ...]:
    return tuple((a, b) for a in POSITIONS for b in POSITIONS if a != b and _far_apart(a, b))


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
    return f"a {describe_object(obj)} {POSITION_PHRASES[obj.position][0]} on a {scene.background} background"


def _caption(rng: np.random.Generator, background: str, objects: tuple[SceneObject, ...],
             with_size: tuple[bool, ...]) -> str:
    bg = _choice(rng, BACKGROUND_PHRASES).format(bg=background)
    if len(objects) == 1:
        template = _choice(rng, ONE_OBJECT_TEMPLATES)
        obj = objects[0]
        return template.format(obj=describe_object(obj, rng, with_size[0]),
                               pos=_choice(rng, POSITION_PHRASES[obj.position]),
                               bg=bg, bg_lead=f"{background} background with").strip()
    template = _choice(rng, TWO_OBJECT_TEMPLATES)
    a, b = objects
    return template.format(obj1=describe_object(a, rng, with_size[0]), pos1=_choice(rng, POSITION_PHRASES[a.position]),
                           obj2=describe_object(b, rng, with_size[1]), pos2=_choice(rng, POSITION_PHRASES[b.position]),
                           bg=bg)


def make_scene(index: int, split: str = "train", seed: int = 0) -> Scene:
    """Scene `index` of a split. train: 1-2 objects, never a held-out pair; heldout: one object whose
    (color, shape) pair is held out; classifier/test: one object, any pair (for the judge)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    background = _choice(rng, BACKGROUNDS)
    held_out = split == "heldout"
    if split == "train" and rng.random() < 0.35:
        where = _choice(rng, _position_pairs())
        objects = tuple(_sample_object(rng, background, held_out=False, size="small", position=p) for p in where)
    elif split in ("classifier", "test"):
        combos = [(c, s) for c in COLORS for s in SHAPES if c != background]
        color, shape = _choice(rng, combos)
        base = _sample_object(rng, background, held_out=False)
        objects = (SceneObject(shape, color, base.size, base.position, base.jitter, base.angle),)
    else:
        objects = (_sample_object(rng, background, held_out=held_out),)
    with_size = tuple(np.random.default_rng([seed, SPLITS[split], index, 1]).random(len(objects)) >= SIZE_OMITTED)
    return Scene(background, objects, _caption(rng, background, objects, with_size))


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
