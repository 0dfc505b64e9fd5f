"""Two-object prompts of the embedded model, drawn as two one-object images joined in latent space.

Why: the embedded model draws one object wholly right 88 % of the time, but binds two objects' colors,
shapes and places to each other almost never (0.4 % of two-object prompts wholly right in one pass,
issue 21); its 4.2 M-parameter transformer learned one-object scenes and not the binding. Each object
alone, at its place, on the prompt's background is a sentence it draws well. So a two-object prompt is
drawn as its two one-object sentences, with the image's seed each, and the final latents are joined: a
last-scale token comes from the image of the object whose centre is nearer (a tie: the first object's).
Objects are at least half the image apart (grammar.MIN_PAIR_DISTANCE) and at most 0.19 of it in
radius, so neither reaches the other's side. Where the prompt names no background, the second image
takes the first one's scale-0 token (the mean color: the background), so both halves share it. A pair
that names no positions ("a red circle and a blue box") is drawn at one of the far-apart position
pairs, chosen from the seed (rng.PLACEMENT_STREAM).

Only a model whose vocabulary is exactly the grammar's composes (the rule that refuses the sentences
it was never trained on). Distances are compared in integers (coordinates times 4n), so every port
draws the same border. Numpy only: every runtime uses it.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np

from hart.errors import PromptError
from hart.portable import grammar, rng
from hart.portable.words import WORD_PATTERN


@dataclass(frozen=True)
class Composition:
    """How a batch of B prompts is drawn: a first pass of B rows (image i's prompt, or its first object's
    sentence), then a second pass of the k composed images' second objects."""

    first: list[str]  # [B] sentences of the first pass
    second: list[str]  # [k] sentences of the second pass
    composed: np.ndarray  # [k] int: the image each second-pass row belongs to
    places: list[tuple[str, str]]  # [k] (first, second) position names
    tied: np.ndarray  # [k] bool: the second row takes the first row's scale-0 id (no background named)

    def regions(self, n: int) -> np.ndarray:
        """[k, n*n] bool: tokens of an n x n scale taken from the second object's image."""
        return np.stack([second_region(a, b, n) for a, b in self.places]) if self.places else np.zeros((0, n * n), bool)

    def join(self, ops, first, second, n: int, token_axis: int = 1):
        """Both passes' arrays -> the batch's: first [B, ...] (every image), second [k, ...] (the composed
        ones), the n x n tokens from axis `token_axis` on (1: ids [B, n*n] and residual [B, n*n, C]; 2:
        latents [B, C, n, n]). ops: the arrays' take / where (the backend's, or numpy's)."""
        batch = len(self.first)
        taken = np.zeros((batch, n * n), dtype=bool)
        taken[self.composed] = self.regions(n)
        rows = np.zeros(batch, dtype=np.int64)
        rows[self.composed] = np.arange(len(self.composed))  # each composed image's second-pass row
        shape = (batch, *([1] * (token_axis - 1)), *((n * n,) if token_axis == 1 else (n, n)))
        taken = taken.reshape(shape + (1,) * (len(first.shape) - len(shape)))
        return ops.where(taken, ops.take(second, rows), first)

    def second_forcing(self, ids: list[np.ndarray] | None, keep: list[np.ndarray] | None,
                       first_scale0: np.ndarray, sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The second pass's forced ids and keep masks (per scale [k, n*n]) from the batch's own forcing of
        those images (None: none) and the ids the first pass drew at scale 0 ([B, 1]): where no background
        is named, scale 0 is the first image's, so both halves share its background."""
        k = len(self.composed)
        ids = [np.zeros((k, t), dtype=np.int64) for t in sizes] if ids is None else [np.array(i) for i in ids]
        keep = [np.zeros((k, t), dtype=bool) for t in sizes] if keep is None else [np.array(m) for m in keep]
        ids[0][self.tied], keep[0][self.tied] = np.asarray(first_scale0)[self.composed][self.tied], True
        return ids, keep


@cache
def far_pairs() -> tuple[tuple[str, str], ...]:
    """Every ordered pair of positions two objects may take, in grammar.POSITIONS order."""
    names = list(grammar.POSITIONS)
    return tuple((a, b) for a in names for b in names if a != b and grammar.far_apart(a, b))


def second_region(first: str, second: str, n: int) -> np.ndarray:
    """[n*n] bool: the tokens of an n x n scale whose centre is strictly nearer `second`'s position."""
    centres = 2 * (2 * np.arange(n, dtype=np.int64) + 1)  # token centres (k + 1/2) / n, times 4n
    ys, xs = np.meshgrid(centres, centres, indexing="ij")

    def distance2(position: str) -> np.ndarray:
        x, y = (round(c * 4 * n) for c in grammar.POSITIONS[position])  # 0.25 / 0.5 / 0.75 times 4n: integers
        return (xs - x) ** 2 + (ys - y) ** 2

    return (distance2(second) < distance2(first)).reshape(-1)


def sentence(obj: dict, position: str, background: str | None) -> str:
    """One object alone, as the training captions say it: 'a small red circle on the left on a blue background'."""
    words = ([obj["size"]] if obj["size"] else []) + [obj["color"], obj["shape"]]
    words += grammar.POSITION_PHRASES[position][0].split()
    if background is not None:
        words += ["on", _article(background), background, "background"]
    return " ".join([_article(words[0])] + words)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def parse(prompt: str, vocabulary: set[str]) -> dict | None:
    """What a prompt says (grammar.check_prompt), or None for one the tokenizer will refuse in its own words."""
    words = WORD_PATTERN.findall(prompt.lower())
    if not words or not set(words) <= vocabulary:
        return None
    try:
        return grammar.check_prompt(prompt, words, 0)
    except PromptError:
        return None


def plan(prompts: list[str], seeds: list[int]) -> Composition:
    """The two passes of a batch; prompts with fewer than two objects (or refused ones) pass as they are."""
    vocabulary = set(grammar.vocabulary())
    first, second, composed, places, tied = list(prompts), [], [], [], []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        said = parse(prompt, vocabulary)
        if said is None or len(said["objects"]) != 2:
            continue
        a, b = said["objects"]
        if a["position"] is None:
            pairs = far_pairs()
            where = pairs[rng.choice(seed, rng.PLACEMENT_STREAM, len(pairs))]
        else:
            where = (a["position"], b["position"])
        first[i] = sentence(a, where[0], said["background"])
        second.append(sentence(b, where[1], said["background"]))
        composed.append(i)
        places.append(where)
        tied.append(said["background"] is None)
    return Composition(first, second, np.array(composed, dtype=np.int64), places, np.array(tied, dtype=bool))


def manifest_section() -> dict:
    """What a port needs to compose as the loop does (export manifests: `compose`)."""
    return {"rule": "hart/portable/compose.py: a prompt of two objects is drawn as two one-object sentences "
                    "'[a|an] [size] color shape <first position phrase> [on a|an <background> background]', first "
                    "the first object's (image seed), then the second's (same seed; without a named background its "
                    "scale-0 id is forced to the first image's); the final latents are joined per last-scale token: "
                    "the second image's where the token centre is strictly nearer the second position (squared "
                    "distances in units of 1/(4n)), else the first's; the ids of every scale likewise",
            "position_phrases": {name: phrases[0] for name, phrases in grammar.POSITION_PHRASES.items()},
            "pairs": [list(p) for p in far_pairs()], "placement_stream": rng.PLACEMENT_STREAM}
